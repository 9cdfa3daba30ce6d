import fs from "node:fs/promises";
import path from "node:path";
import CRC32 from "crc-32";
import { DfsError } from "../../protocol/errors.js";
import { syncDir, writeSynced } from "../durable-file.js";

/*
 * A snapshot file: 24-byte header + sql.js `db.export()` bytes. Header:
 *   0..7   ASCII "DFSSNAP1"
 *   8..15  u64 LE G: the snapshot holds every record of journals < G (and nothing of journals >= G)
 *   16..19 u32 LE length of the database bytes
 *   20..23 i32 LE CRC-32 of the database bytes
 * A folder keeps the current one (snapshot.db) and the one before it (snapshot.prev.db), so that a damaged
 * current snapshot can be rebuilt from the previous one and the journals kept since.
 */

export const SNAPSHOT = "snapshot.db";
export const SNAPSHOT_PREV = "snapshot.prev.db";
const TMP_RE = /^snapshot\..*tmp$/;
const MAGIC = Buffer.from("DFSSNAP1", "ascii");
const HEADER = 24;

export interface SnapshotImage {
  gen: number;
  data: Uint8Array;
}

/** The generation a snapshot file claims, from its header alone; undefined when missing or unreadable. */
export async function snapshotGen(file: string): Promise<number | undefined> {
  let fh: fs.FileHandle | undefined;
  try {
    fh = await fs.open(file, "r");
    const h = Buffer.alloc(HEADER);
    const { bytesRead } = await fh.read(h, 0, HEADER, 0);
    if (bytesRead < HEADER || !h.subarray(0, 8).equals(MAGIC)) return undefined;
    const gen = Number(h.readBigUInt64LE(8));
    return Number.isSafeInteger(gen) && gen >= 1 ? gen : undefined;
  } catch {
    return undefined;
  } finally {
    await fh?.close();
  }
}

/** Reads and checks a snapshot file; undefined when it does not exist, a CORRUPT error when it is damaged. */
export async function readSnapshot(file: string): Promise<SnapshotImage | undefined> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const bad = (why: string) => new DfsError("CORRUPT", `snapshot ${file} is damaged: ${why}`, { details: { file, reason: why } });
  if (buf.length < HEADER || !buf.subarray(0, 8).equals(MAGIC)) throw bad("bad header");
  const gen = Number(buf.readBigUInt64LE(8));
  const len = buf.readUInt32LE(16);
  if (buf.length !== HEADER + len) throw bad(`length ${buf.length - HEADER}, header says ${len}`);
  const data = buf.subarray(HEADER);
  if (CRC32.buf(data) !== buf.readInt32LE(20)) throw bad("crc mismatch");
  if (!Number.isSafeInteger(gen) || gen < 1) throw bad(`generation ${gen}`);
  return { gen, data };
}

export function snapshotHeader(gen: number, data: Uint8Array): Buffer {
  const header = Buffer.alloc(HEADER);
  MAGIC.copy(header, 0);
  header.writeBigUInt64LE(BigInt(gen), 8);
  header.writeUInt32LE(data.length, 16);
  header.writeInt32LE(CRC32.buf(data), 20);
  return header;
}

/**
 * Installs snapshot `gen` in `dir`: temp file, fsync, the current one renamed to the previous, the new one
 * renamed into place, fsync of the folder. Between the two renames only the previous snapshot exists, which
 * start-up uses with the journals kept since. Refuses when the folder already holds a snapshot at least as
 * new (a checkpoint that outlived its directory must not go back).
 */
export async function installSnapshot(dir: string, gen: number, parts: Uint8Array[], signal?: AbortSignal): Promise<void> {
  const tmp = path.join(dir, `snapshot.${gen}.tmp`);
  const cur = path.join(dir, SNAPSHOT);
  const prev = path.join(dir, SNAPSHOT_PREV);
  const size = parts.reduce((n, p) => n + p.length, 0);
  try {
    await writeSynced(tmp, parts, "w");
    const written = (await fs.stat(tmp)).size;
    if (written !== size) throw new DfsError("INTERNAL", `short snapshot write: ${written} of ${size} bytes`);
    signal?.throwIfAborted();
    const have = await snapshotGen(cur);
    if (have !== undefined && have >= gen) throw new DfsError("CONFLICT", `${cur} is already at generation ${have}`);
    if (have !== undefined) await fs.rename(cur, prev);
    await fs.rename(tmp, cur);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await syncDir(dir);
}

/** Writes one snapshot image to a file (temp, fsync, rename); for repairs and recovery. */
export async function copySnapshot(file: string, image: SnapshotImage): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeSynced(tmp, [snapshotHeader(image.gen, image.data), image.data], "w");
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await syncDir(path.dirname(file));
}

/** Removes snapshots being written when a process stopped. */
export async function removeSnapshotTemps(dir: string): Promise<void> {
  for (const name of await fs.readdir(dir)) if (TMP_RE.test(name)) await fs.rm(path.join(dir, name), { force: true });
}
