import { createHash } from "node:crypto";
import CRC32 from "crc-32";

/*
 * On-disk format of the small-chunk log: segment files DATA/chunks/log/<10-digit number>.seg, replayed in
 * number order.
 *
 *   segment header, 16 bytes: "DFSL" | u32 LE format (1) | u32 LE segment number | i32 LE CRC-32 of bytes 0..11
 *   each record, 41-byte header then data:
 *     0      type: 0xD1 put, 0xD0 tombstone (a delete; no data)
 *     1..32  the chunk's SHA-256
 *     33..36 u32 LE data length (0 for a tombstone)
 *     37..40 i32 LE CRC-32 of bytes 0..36 followed by the data
 *     data
 *
 * Within the log, a later record of a hash wins over an earlier one. The CRC tells a torn or rotten record;
 * after damage, the next intact record is found again by trying each later offset that could start a put
 * (type byte, sane length, CRC, and the data hashing to its name), so damage costs only the records it hit.
 */

export const SEGMENT_HEADER_BYTES = 16;
export const RECORD_HEADER_BYTES = 41;
/** Chunks up to this size go to the log; larger ones get a file each. */
export const SMALL_CHUNK_MAX = 256 * 1024;
export const PUT = 0xd1;
export const TOMBSTONE = 0xd0;
const MAGIC = Buffer.from("DFSL", "ascii");

export interface LogRecord {
  type: typeof PUT | typeof TOMBSTONE;
  hash: string;
  /** Offset of the record's header in its segment. */
  offset: number;
  /** Offset just past its data. */
  end: number;
}

/** A stretch of a segment that holds no intact record. */
export interface LogDamage {
  offset: number;
  end: number;
  reason: string;
}

export interface SegmentScan {
  headerProblem?: string;
  records: LogRecord[];
  /** In file order; records and damage together cover [SEGMENT_HEADER_BYTES, size). */
  damage: LogDamage[];
}

export const segmentName = (seq: number) => `${String(seq).padStart(10, "0")}.seg`;
export const SEGMENT_NAME_RE = /^(\d{10})\.seg$/;

export function segmentHeader(seq: number): Buffer {
  const h = Buffer.alloc(SEGMENT_HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt32LE(1, 4);
  h.writeUInt32LE(seq, 8);
  h.writeInt32LE(CRC32.buf(h.subarray(0, 12)), 12);
  return h;
}

export function segmentHeaderProblem(buf: Buffer, seq: number): string | undefined {
  if (buf.length < SEGMENT_HEADER_BYTES) return "short segment header";
  if (!buf.subarray(0, 4).equals(MAGIC)) return "not a log segment";
  if (CRC32.buf(buf.subarray(0, 12)) !== buf.readInt32LE(12)) return "segment header crc mismatch";
  if (buf.readUInt32LE(4) !== 1) return `unknown segment format ${buf.readUInt32LE(4)}`;
  if (buf.readUInt32LE(8) !== seq) return `segment header names segment ${buf.readUInt32LE(8)}`;
  return undefined;
}

function encode(type: number, hash: string, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(RECORD_HEADER_BYTES + data.byteLength);
  out[0] = type;
  out.write(hash, 1, 32, "hex");
  out.writeUInt32LE(data.byteLength, 33);
  out.set(data, RECORD_HEADER_BYTES);
  out.writeInt32LE(CRC32.buf(out.subarray(RECORD_HEADER_BYTES), CRC32.buf(out.subarray(0, 37))), 37);
  return out;
}

export const encodePut = (hash: string, data: Uint8Array) => encode(PUT, hash, data);
export const encodeTombstone = (hash: string) => encode(TOMBSTONE, hash, new Uint8Array(0));

/** Why `rec` (one record's bytes, header and data) is not an intact put of `hash`, or undefined when it is. */
export function putProblem(rec: Buffer, hash: string): string | undefined {
  if (rec.length < RECORD_HEADER_BYTES) return "short record";
  if (rec[0] !== PUT) return "not a put record";
  if (rec.toString("hex", 1, 33) !== hash) return "record names another chunk";
  if (rec.readUInt32LE(33) !== rec.length - RECORD_HEADER_BYTES) return "record length mismatch";
  if (CRC32.buf(rec.subarray(RECORD_HEADER_BYTES), CRC32.buf(rec.subarray(0, 37))) !== rec.readInt32LE(37)) return "record crc mismatch";
  return undefined;
}

/** The record at `off` if it is intact; `strict` (used to find records again after damage) also re-hashes a put's data. */
function recordAt(buf: Buffer, off: number, strict: boolean): LogRecord | undefined {
  if (buf.length - off < RECORD_HEADER_BYTES) return undefined;
  const type = buf[off];
  if (type !== PUT && type !== TOMBSTONE) return undefined;
  const len = buf.readUInt32LE(off + 33);
  const max = type === PUT ? SMALL_CHUNK_MAX : 0;
  const end = off + RECORD_HEADER_BYTES + len;
  if (len > max || end > buf.length) return undefined;
  const data = buf.subarray(off + RECORD_HEADER_BYTES, end);
  if (CRC32.buf(data, CRC32.buf(buf.subarray(off, off + 37))) !== buf.readInt32LE(off + 37)) return undefined;
  const hash = buf.toString("hex", off + 1, off + 33);
  if (strict && createHash("sha256").update(data).digest("hex") !== hash) return undefined;
  return { type, hash, offset: off, end };
}

function whyNot(buf: Buffer, off: number): string {
  if (buf.length - off < RECORD_HEADER_BYTES) return "short record header";
  if (buf[off] !== PUT && buf[off] !== TOMBSTONE) return `bad record type 0x${buf[off]!.toString(16)}`;
  const len = buf.readUInt32LE(off + 33);
  if (len > (buf[off] === PUT ? SMALL_CHUNK_MAX : 0)) return `absurd length ${len}`;
  if (off + RECORD_HEADER_BYTES + len > buf.length) return "short record data";
  return "record crc mismatch";
}

/**
 * Every intact record and every damaged stretch of one segment image. After damage only puts whose data
 * hashes to their name are taken as the next record: a tombstone found by trying offsets could be bytes of
 * some chunk's data, and replaying it would drop a good chunk.
 */
export function scanSegment(buf: Buffer, seq: number): SegmentScan {
  const out: SegmentScan = { headerProblem: segmentHeaderProblem(buf, seq), records: [], damage: [] };
  let off = SEGMENT_HEADER_BYTES;
  while (off < buf.length) {
    const rec = recordAt(buf, off, false);
    if (rec) {
      out.records.push(rec);
      off = rec.end;
      continue;
    }
    const reason = whyNot(buf, off);
    let next = off + 1;
    for (;;) {
      next = buf.indexOf(PUT, next);
      if (next < 0 || recordAt(buf, next, true)) break;
      next++;
    }
    const end = next < 0 ? buf.length : next;
    out.damage.push({ offset: off, end, reason });
    off = end;
  }
  return out;
}
