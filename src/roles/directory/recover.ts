import fs from "node:fs/promises";
import path from "node:path";
import { DfsError } from "../../protocol/errors.js";
import type { Logger } from "../../log.js";
import { syncDir, writeSynced } from "../durable-file.js";
import { applyInTx, openDatabase, type Schema } from "./checkpoint.js";
import { decodePayload, fileHeader, RECORD_HEADER_BYTES } from "./journal-format.js";
import { asideName, lockFolders } from "./meta-folders.js";
import { JOURNAL_RE, journalName, readMetaImage, type GenDamage, type GenImage, type MetaImage } from "./meta-image.js";
import { copySnapshot, SNAPSHOT, SNAPSHOT_PREV } from "./snapshot-file.js";

/*
 * `dfs directory recover`: replays everything that is intact, skipping damaged stretches and records that
 * no longer apply, and writes the result as a new snapshot (its generation above every journal) with an
 * empty journal. The originals are linked into a `damaged-<time>` subfolder of each folder first, so
 * nothing is ever deleted. Paths come from the records themselves: any string in a record that starts
 * with "/" names a path, whatever the record's kind (a file's metadata aside, whose values are free text).
 */

export interface LostStretch {
  file: string;
  offset: number;
  end: number;
  reason: string;
  /** Paths its bytes name, and whether they come from a decoded record or a text scan of the bytes. */
  paths: string[];
  decoded: boolean;
  /** The start of the decoded record, for people. */
  excerpt?: string;
  /** The end of the last write (never acknowledged) rather than damage found under later writes. */
  torn: boolean;
}

export interface RefusedRecord {
  file: string;
  offset: number;
  reason: string;
  paths: string[];
}

export interface RecoverReport {
  dirs: string[];
  /** Nothing needed recovering; nothing was changed. */
  intact: boolean;
  /** When intact: a torn tail start-up will cut (the end of the last write, never acknowledged). */
  tornTail?: { file: string; offset: number };
  damaged: LostStretch[];
  damagedSnapshots: { file: string; reason: string }[];
  refused: RefusedRecord[];
  kept: number;
  /** Paths named by what could not be kept. */
  lost: string[];
  /** Paths of kept records that also touch a lost path (e.g. a later rename of it). */
  changed: string[];
  /** Where the originals now are. */
  aside: string[];
  /** The snapshot's generation: the new one when recovered, the current one (0: none yet) when intact. */
  snapshotGen: number;
}

/** Every string in a decoded record that names a path. */
export function pathsIn(rec: unknown, out = new Set<string>()): Set<string> {
  if (typeof rec === "string") {
    if (rec.startsWith("/")) out.add(rec);
  } else if (Array.isArray(rec)) {
    for (const v of rec) pathsIn(v, out);
  } else if (rec && typeof rec === "object" && !(rec instanceof Uint8Array)) {
    for (const [k, v] of Object.entries(rec)) if (k !== "meta") pathsIn(v, out);
  }
  return out;
}

/** The start of a record for people; an S3 key's secret is left out, as the report may be pasted anywhere. */
const excerptOf = (rec: unknown) => JSON.stringify(rec, (k, v: unknown) => (k === "secret" && typeof v === "string" ? "(secret)" : v))?.slice(0, 120);

/** msgpack strings (fixstr, str8, str16) in raw bytes that look like paths: what damaged bytes still say. */
export function pathsInBytes(buf: Buffer, out = new Set<string>()): Set<string> {
  for (let i = 0; i < buf.length; i++) {
    const b = buf[i]!;
    let len = -1;
    let at = i + 1;
    if (b >= 0xa0 && b <= 0xbf) len = b & 0x1f;
    else if (b === 0xd9 && i + 1 < buf.length) (len = buf[i + 1]!), (at = i + 2);
    else if (b === 0xda && i + 2 < buf.length) (len = buf.readUInt16BE(i + 1)), (at = i + 3);
    if (len < 2 || at + len > buf.length || buf[at] !== 0x2f) continue;
    const s = buf.subarray(at, at + len).toString("utf8");
    if (!/[\u0000-\u001f\ufffd]/.test(s)) out.add(s);
  }
  return out;
}

function describeDamage(gen: GenImage, d: GenDamage): LostStretch {
  const paths = new Set<string>();
  let decoded = false;
  let excerpt: string | undefined;
  for (const c of gen.copies) {
    if (c.foreign || c.scan.size <= d.offset) continue;
    const bytes = c.scan.buf.subarray(d.offset, Math.min(d.end, c.scan.size));
    const head = gen.format === 2 ? RECORD_HEADER_BYTES : 8;
    const len = bytes.length >= head ? bytes.readUInt32LE(gen.format === 2 ? 4 : 0) : -1;
    if (len > 0 && head + len <= bytes.length) {
      try {
        const rec = decodePayload(bytes.subarray(head, head + len));
        pathsIn(rec, paths);
        excerpt ??= excerptOf(rec);
        decoded = true;
        continue;
      } catch {
        // not decodable: read what strings remain
      }
    }
    pathsInBytes(bytes, paths);
  }
  return { file: gen.copies.map((c) => c.file).join(" and "), offset: d.offset, end: d.end, reason: d.reason, paths: [...paths].sort(), decoded, excerpt, torn: d.torn };
}

function readablePaths(payload: Buffer): Set<string> {
  try {
    return pathsIn(decodePayload<unknown>(payload));
  } catch {
    return pathsInBytes(payload);
  }
}

const intersects = (a: Set<string>, b: Set<string>) => [...a].some((x) => b.has(x));

/** Recovers the metadata in `dirs` (see the module comment); throws when no starting point is usable. */
export async function recoverMeta<R>(s: Schema<R>, dirsIn: string[], log: Logger): Promise<RecoverReport> {
  const dirs = [...new Set(dirsIn.map((d) => path.resolve(d)))];
  for (const d of dirs) {
    if (!(await fs.stat(d).then((st) => st.isDirectory(), () => false))) throw new DfsError("NOT_FOUND", `no metadata folder ${d}; nothing to recover (check --data and --meta-dir)`);
  }
  const release = await lockFolders(dirs);
  try {
    const img = await readMetaImage(dirs);
    const report: RecoverReport = {
      dirs, intact: true, damaged: [], refused: [], kept: 0, lost: [], changed: [], aside: [], snapshotGen: img.base?.gen ?? 0,
      damagedSnapshots: img.snapshots.filter((x) => x.problem).map((x) => ({ file: x.file, reason: x.problem! })),
    };
    if (!img.gens.some((g) => g.damage.some((d) => !d.torn)) && report.damagedSnapshots.length === 0) {
      const torn = img.gens.find((g) => g.damage.length > 0);
      if (torn) report.tornTail = { file: torn.copies.map((c) => c.file).join(" and "), offset: torn.damage[0]!.offset };
      return report;
    }
    report.intact = false;
    const data = await replayLeniently(s, img, report);
    report.snapshotGen = Math.max(img.baseGen, ...img.gens.map((g) => g.gen)) + 1;
    await writeRecovered(dirs, report, data);
    log.info("metadata-recovered", { dirs: dirs.join(","), gen: report.snapshotGen, kept: report.kept, lost: report.lost.length });
    return report;
  } finally {
    await release();
  }
}

async function replayLeniently<R>(s: Schema<R>, img: MetaImage, report: RecoverReport): Promise<Uint8Array> {
  const lost = new Set<string>();
  const changed = new Set<string>();
  const db = await openDatabase(img.base?.data, s);
  try {
    for (const gen of img.gens) {
      const events = [...gen.damage.map((d) => ({ at: d.offset, d })), ...gen.records.map((r) => ({ at: r.offset, r }))].sort((a, b) => a.at - b.at);
      let cut = false;
      for (const e of events) {
        if ("d" in e) {
          const stretch = describeDamage(gen, e.d);
          report.damaged.push(stretch);
          for (const p of stretch.paths) lost.add(p);
          cut ||= e.d.torn;
          continue;
        }
        if (cut) continue; // records inside a torn last write were never acknowledged; their stretch is reported
        let rec: R;
        try {
          rec = decodePayload<R>(e.r.payload);
          applyInTx(db, s.apply, rec);
        } catch (err) {
          const paths = [...readablePaths(e.r.payload)].sort();
          report.refused.push({ file: e.r.file, offset: e.r.offset, reason: (err as Error).message, paths });
          for (const p of paths) lost.add(p);
          continue;
        }
        report.kept++;
        const paths = pathsIn(rec);
        if (intersects(paths, lost) || intersects(paths, changed)) for (const p of paths) if (!lost.has(p)) changed.add(p);
      }
    }
    report.lost = [...lost].sort();
    report.changed = [...changed].filter((p) => !lost.has(p)).sort();
    return db.export();
  } finally {
    db.close();
  }
}

/** Names that belong to the metadata (the new state replaces them all). */
const isMetaFile = (name: string) => name === SNAPSHOT || name === SNAPSHOT_PREV || JOURNAL_RE.test(name) || /^journal\.\d+\.discarded$/.test(name);

/**
 * Crash-safe at every step: the originals are hard-linked aside first (still in place), then the new
 * snapshot replaces snapshot.db (its generation makes every old journal stale), a fresh journal is made,
 * and only then are the old names removed from the folder.
 */
async function writeRecovered(dirs: string[], report: RecoverReport, data: Uint8Array): Promise<void> {
  const aside = asideName();
  const gen = report.snapshotGen;
  for (const dir of dirs) {
    const to = path.join(dir, aside);
    await fs.mkdir(to, { recursive: true });
    const names = (await fs.readdir(dir)).filter(isMetaFile);
    for (const n of names) await fs.link(path.join(dir, n), path.join(to, n)).catch(() => fs.copyFile(path.join(dir, n), path.join(to, n)));
    await syncDir(to);
    await copySnapshot(path.join(dir, SNAPSHOT), { gen, data });
    await writeSynced(path.join(dir, journalName(gen)), fileHeader(gen), "w");
    for (const n of names) if (n !== SNAPSHOT) await fs.rm(path.join(dir, n), { force: true });
    await syncDir(dir);
    report.aside.push(to);
  }
}
