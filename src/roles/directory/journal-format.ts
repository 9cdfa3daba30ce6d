import CRC32 from "crc-32";
import { pack, unpack } from "msgpackr";
import { DfsError } from "../../protocol/errors.js";

/*
 * On-disk framing of journal files.
 *
 * Format 2 (written since it was introduced):
 *   file header, 20 bytes: "DFSJ" | u32 LE format (2) | u64 LE generation | i32 LE CRC-32 of bytes 0..15
 *   each record, 20-byte header then payload:
 *     0..3   sync marker C1 4A 52 4E (0xC1 is a byte msgpack never uses, so records are easy to find again)
 *     4..7   u32 LE payload length
 *     8..11  u32 LE bytes from the start of this record's batch (the one write + fsync it was part of) to it
 *     12..15 i32 LE CRC-32 of the payload
 *     16..19 i32 LE CRC-32 of bytes 0..15
 *     payload: msgpackr `pack` of the record
 * The marker and the header CRC let a reader find the next intact record after damage in one linear pass
 * (Buffer.indexOf, then 16 bytes to check per candidate), even when a damaged length field lost the boundary.
 * The batch offset tells a write torn by a crash (damage and everything after it inside the last batch,
 * which was never acknowledged) from rot (damage followed by a batch written after it was made durable).
 *
 * Format 1 (files without the header, read but never written): u32 LE length | i32 LE CRC-32 | payload.
 */

export const FILE_HEADER_BYTES = 20;
export const RECORD_HEADER_BYTES = 20;
/** Longer records are treated as corruption (a torn length field reads as garbage). */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024;
const FILE_MAGIC = Buffer.from("DFSJ", "ascii");
const MARKER = Buffer.from([0xc1, 0x4a, 0x52, 0x4e]);
const LEGACY_HEADER_BYTES = 8;

/** One intact record of a journal file. */
export interface JournalRecord {
  /** Byte offset of the record's header in the file. */
  offset: number;
  /** Byte offset just past its payload. */
  end: number;
  /** Offset of the first record of its batch (format 2); the record's own offset in format 1. */
  batchStart: number;
  payload: Buffer;
}

/** A stretch of bytes that holds no intact record. */
export interface Damage {
  offset: number;
  end: number;
  reason: string;
}

export interface JournalScan {
  format: 1 | 2;
  /** The whole file. */
  buf: Buffer;
  /** From the file header (format 2 with an intact header). */
  generation?: number;
  size: number;
  /** Where records start (after the file header). */
  dataStart: number;
  records: JournalRecord[];
  /** In file order; records and damage together cover [dataStart, size). */
  damage: Damage[];
}

/** Frames a record in format 2; its batch offset is set when the batch is formed ({@link setBatchOffset}). */
export function encodeRecord(rec: unknown): Buffer {
  const payload = pack(rec);
  if (payload.length > MAX_RECORD_BYTES) {
    throw new DfsError("BAD_REQUEST", `journal record too large: ${payload.length} bytes`);
  }
  const out = Buffer.allocUnsafe(RECORD_HEADER_BYTES + payload.length);
  MARKER.copy(out, 0);
  out.writeUInt32LE(payload.length, 4);
  out.writeInt32LE(CRC32.buf(payload), 12);
  payload.copy(out, RECORD_HEADER_BYTES);
  setBatchOffset(out, 0);
  return out;
}

/** Records how far into its batch an encoded record sits (and reseals its header). */
export function setBatchOffset(framed: Buffer, fromBatchStart: number): void {
  framed.writeUInt32LE(fromBatchStart, 8);
  framed.writeInt32LE(CRC32.buf(framed.subarray(0, 16)), 16);
}

export function fileHeader(generation: number): Buffer {
  const h = Buffer.alloc(FILE_HEADER_BYTES);
  FILE_MAGIC.copy(h, 0);
  h.writeUInt32LE(2, 4);
  h.writeBigUInt64LE(BigInt(generation), 8);
  h.writeInt32LE(CRC32.buf(h.subarray(0, 16)), 16);
  return h;
}

export function decodePayload<R>(payload: Buffer): R {
  return unpack(payload) as R;
}

/** Reads a journal image of either format: every intact record and every damaged stretch. */
export function scanJournal(buf: Buffer): JournalScan {
  if (buf.length >= 4 && buf.subarray(0, 4).equals(FILE_MAGIC)) return scanV2(buf, headerProblem(buf));
  if (buf.length === 0) return { format: 2, buf, size: 0, dataStart: 0, records: [], damage: [] };
  const legacy = scanLegacy(buf);
  if (legacy.records[0]?.offset === 0) return legacy;
  // A format 1 file damaged at its start, or a format 2 file whose header is torn or damaged: whichever reading finds more.
  const v2 = scanV2(buf, buf.length < FILE_HEADER_BYTES ? "short file header" : "damaged file header");
  return legacy.records.length > v2.records.length ? legacy : v2;
}

function headerProblem(buf: Buffer): string | undefined {
  if (buf.length < FILE_HEADER_BYTES) return "short file header";
  if (CRC32.buf(buf.subarray(0, 16)) !== buf.readInt32LE(16)) return "file header crc mismatch";
  if (buf.readUInt32LE(4) !== 2) return `unknown journal format ${buf.readUInt32LE(4)}`;
  return undefined;
}

/** The record whose header starts at `off`, if it is intact. */
function recordAt(buf: Buffer, off: number): JournalRecord | undefined {
  if (buf.length - off < RECORD_HEADER_BYTES) return undefined;
  if (buf.readUInt32BE(off) !== 0xc14a524e) return undefined;
  if (CRC32.buf(buf.subarray(off, off + 16)) !== buf.readInt32LE(off + 16)) return undefined;
  const len = buf.readUInt32LE(off + 4);
  const end = off + RECORD_HEADER_BYTES + len;
  const back = buf.readUInt32LE(off + 8);
  if (len > MAX_RECORD_BYTES || end > buf.length || back > off) return undefined;
  const payload = buf.subarray(off + RECORD_HEADER_BYTES, end);
  if (CRC32.buf(payload) !== buf.readInt32LE(off + 12)) return undefined;
  return { offset: off, end, batchStart: off - back, payload };
}

/** Why the bytes at `off` are not an intact record (for messages). */
function whyNot(buf: Buffer, off: number): string {
  if (buf.length - off < RECORD_HEADER_BYTES) return "short record header";
  if (buf.readUInt32BE(off) !== 0xc14a524e) return "no record marker";
  if (CRC32.buf(buf.subarray(off, off + 16)) !== buf.readInt32LE(off + 16)) return "record header crc mismatch";
  const len = buf.readUInt32LE(off + 4);
  if (len > MAX_RECORD_BYTES) return `absurd length ${len}`;
  if (off + RECORD_HEADER_BYTES + len > buf.length) return "short payload";
  return "payload crc mismatch";
}

function scanV2(buf: Buffer, problem: string | undefined): JournalScan {
  const out: JournalScan = { format: 2, buf, size: buf.length, dataStart: FILE_HEADER_BYTES, records: [], damage: [] };
  let off = Math.min(FILE_HEADER_BYTES, buf.length);
  if (problem) {
    out.damage.push({ offset: 0, end: off, reason: problem });
  } else {
    const gen = Number(buf.readBigUInt64LE(8));
    if (Number.isSafeInteger(gen)) out.generation = gen;
  }
  while (off < buf.length) {
    const rec = recordAt(buf, off);
    if (rec) {
      out.records.push(rec);
      off = rec.end;
      continue;
    }
    const reason = whyNot(buf, off);
    let next = off + 1;
    for (;;) {
      next = buf.indexOf(MARKER, next);
      if (next < 0 || recordAt(buf, next)) break;
      next++;
    }
    const end = next < 0 ? buf.length : next;
    const last = out.damage.at(-1);
    if (last && last.end === off) last.end = end;
    else out.damage.push({ offset: off, end, reason });
    off = end;
  }
  return out;
}

function legacyAt(buf: Buffer, off: number): JournalRecord | undefined {
  if (buf.length - off < LEGACY_HEADER_BYTES) return undefined;
  const len = buf.readUInt32LE(off);
  const end = off + LEGACY_HEADER_BYTES + len;
  if (len > MAX_RECORD_BYTES || end > buf.length) return undefined;
  const payload = buf.subarray(off + LEGACY_HEADER_BYTES, end);
  if (CRC32.buf(payload) !== buf.readInt32LE(off + 4)) return undefined;
  return { offset: off, end, batchStart: off, payload };
}

/** True for the first byte of a msgpack map, which every journal record is. */
const startsMap = (b: number | undefined) => b !== undefined && ((b >= 0x80 && b <= 0x8f) || b === 0xde || b === 0xdf);

function scanLegacy(buf: Buffer): JournalScan {
  const out: JournalScan = { format: 1, buf, size: buf.length, dataStart: 0, records: [], damage: [] };
  let off = 0;
  while (off < buf.length) {
    const rec = legacyAt(buf, off);
    if (rec) {
      out.records.push(rec);
      off = rec.end;
      continue;
    }
    const reason = buf.length - off < LEGACY_HEADER_BYTES ? "short header" : buf.readUInt32LE(off) > MAX_RECORD_BYTES ? "absurd length" : "crc mismatch or short payload";
    // No marker in this format: try every later offset, checking the CRC only where the length fits and a map begins.
    let next = -1;
    for (let p = off + 1; p + LEGACY_HEADER_BYTES < buf.length; p++) {
      const len = buf.readUInt32LE(p);
      if (len === 0 || p + LEGACY_HEADER_BYTES + len > buf.length || !startsMap(buf[p + LEGACY_HEADER_BYTES])) continue;
      if (legacyAt(buf, p)) {
        next = p;
        break;
      }
    }
    const end = next < 0 ? buf.length : next;
    out.damage.push({ offset: off, end, reason });
    off = end;
  }
  return out;
}
