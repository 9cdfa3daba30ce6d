import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { PUT, RECORD_HEADER_BYTES, SEGMENT_NAME_RE, scanSegment } from "../../src/roles/storage/smalllog-format.js";

/** Where a storage node's data folder keeps a chunk: its own file, or a record in a log segment. */
export interface ChunkOnDisk {
  file: string;
  /** Offset of the chunk's bytes in `file`. */
  offset: number;
  data: Buffer;
}

/** The log segments of a data folder, oldest first. */
export function segmentFiles(dataDir: string): string[] {
  const dir = path.join(dataDir, "chunks", "log");
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((n) => SEGMENT_NAME_RE.test(n)).sort().map((n) => path.join(dir, n));
}

/**
 * A chunk as a node's data folder holds it, read from outside the node (which may be running: a record
 * still being written reads as damage and is passed over): the chunk file, else the log's latest put of it
 * (intact or with rotten data) unless a later tombstone deleted it.
 */
export function chunkOnDisk(dataDir: string, hash: string): ChunkOnDisk | undefined {
  const file = path.join(dataDir, "chunks", hash.slice(0, 2), hash);
  if (fs.existsSync(file)) return { file, offset: 0, data: fs.readFileSync(file) };
  let found: ChunkOnDisk | undefined;
  for (const seg of segmentFiles(dataDir)) {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(seg);
    } catch {
      continue; // compacted away meanwhile
    }
    const scan = scanSegment(buf, Number(SEGMENT_NAME_RE.exec(path.basename(seg))![1]));
    // A damaged stretch that is exactly one record with a sound header is a chunk whose data rotted: still "held".
    const rotten = scan.damage.flatMap((d) => {
      const len = d.end - d.offset - RECORD_HEADER_BYTES;
      return len >= 0 && buf[d.offset] === PUT && buf.readUInt32LE(d.offset + 33) === len ? [{ type: PUT, hash: buf.toString("hex", d.offset + 1, d.offset + 33), offset: d.offset, end: d.end }] : [];
    });
    for (const r of [...scan.records, ...rotten].sort((a, b) => a.offset - b.offset)) {
      if (r.hash !== hash) continue;
      found = r.type === PUT ? { file: seg, offset: r.offset + RECORD_HEADER_BYTES, data: Buffer.from(buf.subarray(r.offset + RECORD_HEADER_BYTES, r.end)) } : undefined;
    }
  }
  return found;
}

/** True when the data folder holds an intact copy of the chunk. */
export function hasIntactChunk(dataDir: string, hash: string): boolean {
  const c = chunkOnDisk(dataDir, hash);
  return c !== undefined && createHash("sha256").update(c.data).digest("hex") === hash;
}

/** Flips one byte of a chunk's data where it lies on disk, as rot would. */
export function corruptChunkOnDisk(dataDir: string, hash: string, at = 0): ChunkOnDisk {
  const c = chunkOnDisk(dataDir, hash);
  if (!c) throw new Error(`no chunk ${hash} in ${dataDir}`);
  const fd = fs.openSync(c.file, "r+");
  try {
    fs.writeSync(fd, Buffer.from([c.data[at]! ^ 0xff]), 0, 1, c.offset + at);
  } finally {
    fs.closeSync(fd);
  }
  return c;
}

/** True when the data folder holds the chunk, intact or not. */
export function holdsChunk(dataDir: string, hash: string): boolean {
  return chunkOnDisk(dataDir, hash) !== undefined;
}
