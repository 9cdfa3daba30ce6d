import fs from "node:fs/promises";
import path from "node:path";
import { DfsError } from "../../protocol/errors.js";
import { FILE_HEADER_BYTES, fileHeader, scanJournal, type JournalRecord, type JournalScan } from "./journal-format.js";
import { readSnapshot, snapshotGen, SNAPSHOT, SNAPSHOT_PREV, type SnapshotImage } from "./snapshot-file.js";

/*
 * What a set of metadata folders holds, read without changing anything: the newest intact snapshot and,
 * for every journal generation from it on, the records of all copies merged. Every folder holds the same
 * bytes at the same offsets (the journal writes them all alike), so an intact record at an offset in any
 * copy is the record at that offset; a stretch that no copy holds intact is damage. Start-up, the
 * checkpointer and recovery all read through here.
 */

export const JOURNAL_RE = /^journal\.(\d+)$/;
export const journalName = (gen: number) => `journal.${gen}`;

export interface CopyState {
  dir: string;
  file: string;
  scan: JournalScan;
  /** Counted as damage from its first byte: another format, or a header naming another generation. */
  foreign: boolean;
}

/** A stretch of a generation that no copy holds intact. */
export interface GenDamage {
  offset: number;
  end: number;
  reason: string;
  /**
   * Only the end of the last write, which a crash may tear before it was acknowledged: cut, not refused.
   * Damage followed by a write made after it (a later batch or generation) is rot.
   */
  torn: boolean;
}

export interface MergedRecord extends JournalRecord {
  gen: number;
  /** A copy that holds it intact, and its bytes there. */
  file: string;
  frame: Buffer;
}

export interface GenImage {
  gen: number;
  format: 1 | 2;
  copies: CopyState[];
  /** Intact records in offset order, also those after damage. */
  records: MergedRecord[];
  damage: GenDamage[];
  /** The largest copy's size. */
  size: number;
  dataStart: number;
  /** Header + records before the first damage: what every copy should hold (cut there when torn). */
  good: Buffer;
}

export interface SnapshotCopy {
  dir: string;
  file: string;
  gen: number | undefined;
  /** Why it cannot be used, when it cannot. */
  problem?: string;
}

export interface MetaImage {
  dirs: string[];
  /** The snapshot replay starts from; undefined means an empty database and journals from generation 1. */
  base: (SnapshotImage & { file: string }) | undefined;
  baseGen: number;
  snapshots: SnapshotCopy[];
  /** Generations baseGen.. in order. */
  gens: GenImage[];
  /** Oldest generation worth keeping (that of the previous intact snapshot), for clean-up. */
  keepFrom: number;
}

const problemOf = (err: unknown) => ((err as DfsError).details?.reason as string | undefined) ?? (err as Error).message;

async function journalFiles(dir: string, below: number): Promise<Map<number, string>> {
  const journals = new Map<number, string>();
  for (const name of await fs.readdir(dir)) {
    const m = JOURNAL_RE.exec(name);
    if (!m || Number(m[1]) >= below) continue;
    // Anything but a regular file (say, a device a failed disk left behind) is no copy at all.
    const st = await fs.stat(path.join(dir, name)).catch(() => undefined);
    if (st?.isFile()) journals.set(Number(m[1]), path.join(dir, name));
  }
  return journals;
}

async function snapshotCopies(dirs: string[], below: number): Promise<SnapshotCopy[]> {
  const out: SnapshotCopy[] = [];
  for (const dir of dirs) {
    for (const name of [SNAPSHOT, SNAPSHOT_PREV]) {
      const file = path.join(dir, name);
      if (!(await fs.stat(file).then(() => true, () => false))) continue;
      const gen = await snapshotGen(file);
      if (gen === undefined) out.push({ dir, file, gen, problem: "bad header" });
      else if (gen <= below) out.push({ dir, file, gen });
    }
  }
  return out;
}

/**
 * Reads every folder. `below`: only generations below it, all of them closed (a checkpoint's input).
 * Throws CORRUPT when nothing usable can start the replay (every snapshot damaged and no journal chain
 * from generation 1), when a generation is missing from every folder, or when copies disagree.
 */
export async function readMetaImage(dirs: string[], opts: { below?: number } = {}): Promise<MetaImage> {
  const below = opts.below ?? Infinity;
  const listings = await Promise.all(dirs.map(async (dir) => ({ dir, journals: await journalFiles(dir, below) })));
  const present = new Set(listings.flatMap((l) => [...l.journals.keys()]));
  const maxGen = Math.max(0, ...present);
  const snapshots = await snapshotCopies(dirs, below);

  // The newest intact snapshot: an older one needs every journal the newer one needs, and more.
  let base: MetaImage["base"];
  for (const s of snapshots.filter((x) => !x.problem).sort((a, b) => b.gen! - a.gen!)) {
    if (base) {
      if (s.gen === base.gen) await readSnapshot(s.file).catch((err) => (s.problem = problemOf(err)));
      continue;
    }
    try {
      const img = await readSnapshot(s.file);
      if (img) base = { ...img, file: s.file };
    } catch (err) {
      s.problem = problemOf(err);
    }
  }
  const baseGen = base?.gen ?? 1;
  const missing = firstMissing(present, baseGen, maxGen);
  // A damaged snapshot newer than the base, whose journals are gone: name the snapshot, the real cause.
  const damaged = snapshots.find((s) => s.problem && (s.gen === undefined || s.gen > baseGen));
  if (damaged && (missing !== undefined || (!base && !present.has(1)))) {
    throw new DfsError("CORRUPT", `snapshot ${damaged.file} is damaged (${damaged.problem}) and no intact snapshot with the journals after it can replace it`, {
      details: { file: damaged.file, offset: 0, reason: damaged.problem },
    });
  }
  if (missing !== undefined) {
    throw new DfsError("CORRUPT", `journal generation ${missing} is missing from ${dirs.join(", ")} (present: ${[...present].sort((a, b) => a - b).join(",")}; replay starts at ${baseGen})`, {
      details: { file: path.join(dirs[0]!, journalName(missing)), offset: 0, reason: "missing generation" },
    });
  }

  const gens: GenImage[] = [];
  for (let g = baseGen; g <= maxGen; g++) {
    const copies: CopyState[] = [];
    for (const l of listings) {
      const file = l.journals.get(g);
      if (file) copies.push({ dir: l.dir, file, scan: scanJournal(await fs.readFile(file)), foreign: false });
    }
    gens.push(mergeCopies(g, copies));
  }
  classifyDamage(gens, opts.below !== undefined);
  // The previous starting point stays usable while its journals are kept: an older intact snapshot, or generation 1.
  const older = snapshots.filter((s) => !s.problem && s.gen! < baseGen).map((s) => s.gen!);
  const fallbacks = [...older, 1].filter((g) => g < baseGen && firstMissing(present, g, baseGen - 1) === undefined);
  return { dirs, base, baseGen, snapshots, gens, keepFrom: Math.min(baseGen, ...fallbacks) };
}

function firstMissing(present: Set<number>, from: number, to: number): number | undefined {
  for (let g = from; g <= to; g++) if (!present.has(g)) return g;
  return undefined;
}

function mergeCopies(gen: number, copies: CopyState[]): GenImage {
  const v2 = copies.filter((c) => c.scan.format === 2).length;
  const format: 1 | 2 = v2 * 2 >= copies.length ? 2 : 1;
  for (const c of copies) c.foreign = c.scan.format !== format || (c.scan.generation !== undefined && c.scan.generation !== gen);
  const usable = copies.filter((c) => !c.foreign);
  const dataStart = format === 2 ? FILE_HEADER_BYTES : 0;
  const byOffset = new Map<number, MergedRecord>();
  for (const c of usable) {
    for (const r of c.scan.records) {
      const seen = byOffset.get(r.offset);
      if (!seen) byOffset.set(r.offset, { ...r, gen, file: c.file, frame: c.scan.buf.subarray(r.offset, r.end) });
      else if (!seen.payload.equals(r.payload)) {
        throw new DfsError("CORRUPT", `copies of journal generation ${gen} disagree at byte ${r.offset} (${seen.file}, ${c.file}); start the directory with only the folder you trust`, {
          details: { file: c.file, offset: r.offset, reason: "copies disagree" },
        });
      }
    }
  }
  const size = Math.max(0, ...copies.map((c) => c.scan.size));
  const damage: GenDamage[] = [];
  const header = format === 2 ? usable.find((c) => c.scan.size >= dataStart && c.scan.damage[0]?.offset !== 0) : undefined;
  if (format === 2 && !header && size > 0) addDamage(damage, 0, Math.min(dataStart, size), reasonAt(copies, 0));
  let off = Math.min(dataStart, size);
  const records: MergedRecord[] = [];
  for (const r of [...byOffset.values()].sort((a, b) => a.offset - b.offset)) {
    if (r.offset < off) continue; // overlaps the record before it: a chance match inside damaged bytes
    if (r.offset > off) addDamage(damage, off, r.offset, reasonAt(copies, off));
    records.push(r);
    off = r.end;
  }
  if (off < size) addDamage(damage, off, size, reasonAt(copies, off));
  return { gen, format, copies, records, damage, size, dataStart, good: goodBytes(gen, format, usable, records, damage, header) };
}

/** Header + records before the first damage; a whole copy when one holds exactly that (no second copy in memory). */
function goodBytes(gen: number, format: 1 | 2, usable: CopyState[], records: MergedRecord[], damage: GenDamage[], header: CopyState | undefined): Buffer {
  const goodEnd = damage[0]?.offset ?? Infinity;
  const whole = usable.find((c) => c.scan.damage.length === 0 && c.scan.size === (records.at(-1)?.end ?? c.scan.dataStart) && damage.length === 0);
  if (whole && (format === 1 || whole.scan.size >= FILE_HEADER_BYTES)) return whole.scan.buf;
  const parts: Buffer[] = format === 1 ? [] : [header ? header.scan.buf.subarray(0, FILE_HEADER_BYTES) : fileHeader(gen)];
  for (const r of records) if (r.end <= goodEnd) parts.push(r.frame);
  return Buffer.concat(parts);
}

function addDamage(list: GenDamage[], offset: number, end: number, reason: string): void {
  const last = list.at(-1);
  if (last && last.end === offset) last.end = end;
  else list.push({ offset, end, reason, torn: false });
}

/** What a copy that covers `offset` says is wrong there. */
function reasonAt(copies: CopyState[], offset: number): string {
  for (const c of copies) {
    if (c.foreign) continue;
    for (const d of c.scan.damage) if (d.offset <= offset && offset < d.end) return d.reason;
  }
  return copies.some((c) => c.foreign) ? "not a journal of this generation" : "missing from every copy";
}

/**
 * Marks damage that may be cut as a torn write: in the last generation that holds anything beyond its
 * header, with nothing after it but records of the same batch (format 2), or nothing at all (format 1).
 * Every journal of a checkpoint is closed, so none of its damage is torn.
 */
function classifyDamage(gens: GenImage[], allClosed: boolean): void {
  let lastUsed = -1;
  gens.forEach((g, i) => {
    if (g.size > g.dataStart) lastUsed = i;
  });
  gens.forEach((g, i) => {
    let cut: number | undefined;
    for (const d of g.damage) {
      if (allClosed || i < lastUsed) continue;
      if (cut !== undefined) {
        d.torn = true;
        continue;
      }
      const after = g.records.filter((r) => r.offset >= d.end);
      if (after.length === 0 || (g.format === 2 && after.every((r) => r.batchStart <= d.offset))) {
        d.torn = true;
        cut = d.offset;
      }
    }
  });
}

/** The first damage that may not be cut, if any. */
export function firstRot(img: MetaImage): { gen: GenImage; damage: GenDamage } | undefined {
  for (const gen of img.gens) for (const damage of gen.damage) if (!damage.torn) return { gen, damage };
  return undefined;
}
