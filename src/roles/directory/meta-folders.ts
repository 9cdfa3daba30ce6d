import fs from "node:fs/promises";
import { readFileSync } from "node:fs";
import path from "node:path";
import { DfsError } from "../../protocol/errors.js";
import type { Logger } from "../../log.js";
import { syncDir, writeSynced } from "../durable-file.js";
import { JOURNAL_RE, journalName, type CopyState, type GenImage, type MetaImage } from "./meta-image.js";
import { copySnapshot, removeSnapshotTemps, SNAPSHOT } from "./snapshot-file.js";
import { synced } from "../../fsyncs.js";

/*
 * Upkeep of metadata folders: the lock that keeps two processes out of one folder, the repairs that make
 * every folder hold the same snapshot and journals at start-up, and setting damaged files aside (never
 * deleting them) in a `damaged-<time>` subfolder.
 */

const LOCK = "LOCK";
/** Lock files this process holds (its own pid in a lock file is otherwise one left by an earlier run of this pid). */
const heldHere = new Set<string>();

function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Takes the folders for this process: a `LOCK` file holding its pid and the boot it was taken in. A lock
 * left by a process that is gone (a pid not running, a lock from an earlier boot, or this very pid, as a
 * container's first process has at every start) is taken over. Returns the release.
 */
export async function lockFolders(dirs: string[]): Promise<() => Promise<void>> {
  const boot = bootId();
  const taken: string[] = [];
  const release = async () => {
    for (const f of taken.splice(0)) {
      heldHere.delete(f);
      await fs.rm(f, { force: true }).catch(() => undefined);
    }
  };
  try {
    for (const dir of dirs) {
      const file = path.join(dir, LOCK);
      const [pid, lockBoot] = (await fs.readFile(file, "utf8").catch(() => "")).trim().split(/\s+/);
      const holder = Number(pid);
      const other = holder !== process.pid && alive(holder) && (lockBoot ?? "") === boot;
      if (heldHere.has(file) || (Number.isInteger(holder) && holder > 0 && other)) {
        throw new DfsError("UNAVAILABLE", `metadata folder ${dir} is in use by process ${holder} (a directory or a recovery); stop it first, or remove ${file} if that process is not dfs`);
      }
      await fs.writeFile(file, `${process.pid} ${boot}\n`);
      heldHere.add(file);
      taken.push(file);
    }
  } catch (err) {
    await release();
    throw err;
  }
  return release;
}

/** A subfolder name for files set aside now. */
export function asideName(): string {
  return `damaged-${new Date().toISOString().replace(/[:.]/g, "-")}`;
}

/** Moves files into `dir/<aside>/` (created when needed); never deletes them. */
export async function setAside(dir: string, aside: string, files: string[]): Promise<string> {
  const to = path.join(dir, aside);
  await fs.mkdir(to, { recursive: true });
  for (const f of files) await fs.rename(f, path.join(to, path.basename(f)));
  await syncDir(to);
  await syncDir(dir);
  return to;
}

async function replaceFile(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeSynced(tmp, data, "w");
  await fs.rename(tmp, file);
}

/** Damage a copy holds before `end` (beyond it is a tail to cut). */
const damagedBefore = (c: CopyState, end: number) => c.foreign || c.scan.damage.some((d) => d.offset < end);

/** Brings one copy of a generation to `gen.good`; returns what was done, for the log. */
async function repairCopy(gen: GenImage, c: CopyState, aside: string): Promise<string | undefined> {
  const want = gen.good;
  if (c.scan.size === want.length && !damagedBefore(c, want.length)) return undefined;
  if (c.scan.size > want.length && !damagedBefore(c, want.length) && c.scan.buf.subarray(0, want.length).equals(want)) {
    const fh = await fs.open(c.file, "r+");
    try {
      await fh.truncate(want.length);
      await synced(fh.sync());
    } finally {
      await fh.close();
    }
    return `cut ${c.scan.size - want.length} bytes at ${want.length}`;
  }
  if (damagedBefore(c, Math.min(want.length, c.scan.size))) {
    await setAside(c.dir, aside, [c.file]);
    await replaceFile(c.file, want);
    return `damaged copy set aside in ${aside}, rewritten from the good bytes`;
  }
  await replaceFile(c.file, want);
  return `was behind (${c.scan.size} of ${want.length} bytes), rewritten`;
}

/**
 * Makes every folder hold the chosen snapshot and the good bytes of every generation (copying what a
 * folder lacks, cutting torn tails, setting damaged copies aside), then removes what is no longer needed.
 */
export async function repairFolders(img: MetaImage, log: Logger): Promise<void> {
  const aside = asideName();
  for (const dir of img.dirs) {
    await removeSnapshotTemps(dir);
    for (const s of img.snapshots.filter((x) => x.dir === dir && x.problem)) {
      await setAside(dir, aside, [s.file]);
      log.warn("snapshot-damaged-set-aside", { file: s.file, reason: s.problem, to: path.join(dir, aside) });
    }
    const own = img.snapshots.find((s) => s.dir === dir && path.basename(s.file) === SNAPSHOT && !s.problem);
    if (img.base && own?.gen !== img.base.gen) {
      await copySnapshot(path.join(dir, SNAPSHOT), img.base);
      log.warn("snapshot-copied", { dir, gen: img.base.gen, from: img.base.file });
    }
    for (const gen of img.gens) {
      const c = gen.copies.find((x) => x.dir === dir);
      const file = path.join(dir, journalName(gen.gen));
      const done = c ? await repairCopy(gen, c, aside) : (await replaceFile(file, gen.good), "missing, copied");
      if (done) log.warn(done.startsWith("cut") ? "journal-tail-cut" : "journal-copy-repaired", { file, what: done });
    }
    await removeJournalsBelow([dir], img.keepFrom);
    await syncDir(dir);
  }
}

/** Deletes journal generations below `gen` in each folder. */
export async function removeJournalsBelow(dirs: string[], gen: number): Promise<number[]> {
  const gone = new Set<number>();
  for (const dir of dirs) {
    let removed = false;
    for (const name of await fs.readdir(dir)) {
      const m = JOURNAL_RE.exec(name);
      if (m && Number(m[1]) < gen) {
        await fs.rm(path.join(dir, name), { force: true });
        gone.add(Number(m[1]));
        removed = true;
      }
    }
    if (removed) await syncDir(dir);
  }
  return [...gone].sort((a, b) => a - b);
}
