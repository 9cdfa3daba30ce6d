import fs from "node:fs/promises";
import path from "node:path";
import { DfsError } from "../../protocol/errors.js";
import type { Logger } from "../../log.js";
import { syncDir, writeSynced } from "../durable-file.js";
import { compactSegment } from "./smalllog-compact.js";
import {
  PUT, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_NAME_RE, SMALL_CHUNK_MAX, encodePut, encodeTombstone, putProblem, scanSegment, segmentHeader, segmentName,
} from "./smalllog-format.js";
import { LogWriter, createSegment, type ActiveSegment, type LogWriterStats, type Placed } from "./smalllog-writer.js";
import { synced } from "../../fsyncs.js";

export interface SmallLogOptions {
  /** A segment is sealed, and the next started, once it would grow past this. Default 64 MiB. */
  segmentBytes?: number;
  /** A sealed segment is compacted once this share of it is dead... Default 0.5. */
  compactRatio?: number;
  /** ...and at least this many bytes. Default 1 MiB. */
  compactMinBytes?: number;
}

export interface SmallLogStats extends LogWriterStats {
  /** Sealed segments whose live records were copied forward and whose file was removed. */
  compactions: number;
}

/** Where a chunk's latest put record is. Never changed in place: compaction tells a moved record by identity. */
export interface Entry {
  seg: number;
  off: number;
  len: number;
}

interface SegmentInfo {
  /** Bytes in the file. */
  size: number;
  /** Bytes of records still needed: indexed puts and tombstones. */
  live: number;
  /** Set when a compaction found a live record damaged; cleared when the segment's live bytes change. */
  stuck?: boolean;
}

const recordBytes = (len: number) => RECORD_HEADER_BYTES + len;

/**
 * Small chunks appended to segment files under one folder, with an index in memory (hash -> latest put
 * record) rebuilt by replaying the segments at start-up. A put or delete resolves once its record is
 * fsynced; concurrent ones share one fsync (see LogWriter). Callers serialize operations on one hash.
 */
export class SmallLog {
  readonly index = new Map<string, Entry>();
  readonly segments = new Map<number, SegmentInfo>();
  /** Data bytes of the chunks in the index. */
  bytes = 0;
  private writer!: LogWriter;
  private compactions = 0;
  private compacting: Promise<void> | undefined;
  /** Chunks whose put is queued but not yet durable (and so not in the index). */
  private readonly putting = new Set<string>();
  /** A segment whose compaction waits for one of those puts to settle. */
  private deferred: SegmentInfo | undefined;
  private closing = false;
  private readonly segmentBytes: number;
  private readonly ratio: number;
  private readonly minDead: number;

  private constructor(readonly dir: string, readonly log: Logger, opts: SmallLogOptions) {
    this.segmentBytes = opts.segmentBytes ?? 64 * 1024 * 1024;
    this.ratio = opts.compactRatio ?? 0.5;
    this.minDead = opts.compactMinBytes ?? 1024 * 1024;
  }

  static async open(dir: string, log: Logger, opts: SmallLogOptions = {}): Promise<SmallLog> {
    const created = await fs.mkdir(dir, { recursive: true });
    if (created) await syncDir(path.dirname(dir));
    const sl = new SmallLog(dir, log, opts);
    const seqs = (await fs.readdir(dir)).flatMap((n) => SEGMENT_NAME_RE.exec(n)?.[1] ?? []).map(Number).sort((a, b) => a - b);
    let last: ActiveSegment | undefined;
    for (const [i, seq] of seqs.entries()) {
      const isLast = i === seqs.length - 1;
      const size = await sl.replay(seq, isLast);
      if (isLast && size < sl.segmentBytes) last = { seq, fh: await fs.open(path.join(dir, segmentName(seq)), "r+"), size };
    }
    const active = last ?? (await createSegment(dir, (seqs.at(-1) ?? 0) + 1));
    sl.segments.set(active.seq, sl.segments.get(active.seq) ?? { size: active.size, live: 0 });
    sl.writer = new LogWriter(dir, active, sl.segmentBytes, log, (seq) => {
      sl.segments.set(seq, { size: SEGMENT_HEADER_BYTES, live: 0 });
      sl.maybeCompact();
    });
    sl.maybeCompact();
    return sl;
  }

  /**
   * Applies one segment's records to the index. Damage at the very end of the last segment is a write a
   * crash tore before it was acknowledged: cut off there. Damage anywhere else is rot: warned about and
   * skipped, never fatal; the chunks it hit are simply absent, as the scrubber and the chunk report will say.
   * Returns the segment's good size.
   */
  private async replay(seq: number, isLast: boolean): Promise<number> {
    const file = path.join(this.dir, segmentName(seq));
    const buf = await fs.readFile(file);
    const scan = scanSegment(buf, seq);
    let size = buf.length;
    if (scan.headerProblem) {
      if (isLast && scan.records.length === 0) {
        // Only the header of a brand-new segment could be torn: nothing was ever acknowledged in it.
        this.log.warn("chunk log: torn segment header rewritten", { file, reason: scan.headerProblem });
        await writeSynced(file, segmentHeader(seq), "w");
        this.segments.set(seq, { size: SEGMENT_HEADER_BYTES, live: 0 });
        return SEGMENT_HEADER_BYTES;
      }
      this.log.warn("chunk log: damaged segment header, reading its records anyway", { file, reason: scan.headerProblem });
    }
    const tail = scan.damage.at(-1);
    if (isLast && tail && tail.end === buf.length) {
      scan.damage.pop();
      size = tail.offset;
      const fh = await fs.open(file, "r+");
      try {
        await fh.truncate(size);
        await synced(fh.sync());
      } finally {
        await fh.close();
      }
      this.log.warn("chunk log: torn tail cut at the last good record", { file, at: size, cut: buf.length - size, reason: tail.reason });
    }
    for (const d of scan.damage) this.log.warn("chunk log: damaged records skipped", { file, offset: d.offset, bytes: d.end - d.offset, reason: d.reason });
    const info: SegmentInfo = { size, live: 0 };
    this.segments.set(seq, info);
    for (const r of scan.records) {
      if (r.type === PUT) this.setEntry(r.hash, { seg: seq, off: r.offset, len: r.end - r.offset - RECORD_HEADER_BYTES });
      else {
        this.dropEntry(r.hash);
        info.live += r.end - r.offset;
      }
    }
    return size;
  }

  private setEntry(hash: string, e: Entry): void {
    this.dropEntry(hash);
    this.index.set(hash, e);
    this.bytes += e.len;
    this.adjust(e.seg, recordBytes(e.len));
  }

  private dropEntry(hash: string): Entry | undefined {
    const old = this.index.get(hash);
    if (!old) return undefined;
    this.index.delete(hash);
    this.bytes -= old.len;
    this.adjust(old.seg, -recordBytes(old.len));
    return old;
  }

  private adjust(seg: number, liveDelta: number): void {
    const info = this.segments.get(seg);
    if (!info) return;
    info.live += liveDelta;
    info.stuck = false;
  }

  get stats(): SmallLogStats {
    return { ...this.writer.stats, compactions: this.compactions };
  }

  get activeSeq(): number {
    return this.writer.activeSeq;
  }

  has(hash: string): boolean {
    return this.index.has(hash);
  }

  hashes(): IterableIterator<string> {
    return this.index.keys();
  }

  /** Appends a put of a chunk not in the log; resolves once it is durable and indexed. */
  async put(hash: string, data: Uint8Array): Promise<void> {
    if (data.byteLength > SMALL_CHUNK_MAX) throw new DfsError("BAD_REQUEST", `chunk of ${data.byteLength} bytes is too large for the log`);
    this.putting.add(hash);
    try {
      const at = await this.appendRaw(encodePut(hash, data));
      this.setEntry(hash, { seg: at.seg, off: at.off, len: data.byteLength });
    } finally {
      this.putting.delete(hash);
      if (this.deferred) {
        this.deferred.stuck = false;
        this.deferred = undefined;
        this.maybeCompact();
      }
    }
  }

  /** True while a put of the chunk is queued: its record will come after any record queued before it settles. */
  isPutting(hash: string): boolean {
    return this.putting.has(hash);
  }

  /** Appends one encoded record and counts its bytes in the segment it landed in. */
  async appendRaw(buf: Buffer): Promise<Placed> {
    const at = await this.writer.append(buf);
    const info = this.segments.get(at.seg);
    if (info) info.size = Math.max(info.size, at.off + buf.length);
    return at;
  }

  /** Points a chunk at the copy compaction made of it, unless it was deleted or moved meanwhile. */
  moved(hash: string, from: Entry, to: Entry): void {
    if (this.index.get(hash) === from) this.setEntry(hash, to);
  }

  /** Counts a tombstone compaction copied forward as needed. */
  keptTombstone(at: Placed): void {
    this.adjust(at.seg, RECORD_HEADER_BYTES);
  }

  /** Removes a compacted segment: out of the tables first, so that nothing picks or reads it again. */
  async dropSegment(seq: number): Promise<void> {
    this.segments.delete(seq);
    await fs.rm(path.join(this.dir, segmentName(seq)), { force: true });
    await syncDir(this.dir);
  }

  /**
   * Reads a chunk with one positioned read of its record, which is checked (CRC, name, length) so that a
   * torn or rotten record is never served. A record moved by compaction meanwhile is looked up again.
   */
  async get(hash: string): Promise<Buffer> {
    for (let attempt = 0; ; attempt++) {
      const e = this.index.get(hash);
      if (!e) throw new DfsError("NOT_FOUND", `no chunk ${hash}`, { details: { hash } });
      let rec: Buffer;
      try {
        rec = await readAt(path.join(this.dir, segmentName(e.seg)), e.off, recordBytes(e.len));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT" && this.index.get(hash) !== e && attempt < 3) continue;
        throw err;
      }
      const problem = putProblem(rec, hash);
      if (problem) {
        this.log.warn("corrupt chunk log record", { hash, segment: e.seg, offset: e.off, reason: problem });
        throw new DfsError("CORRUPT", `stored chunk ${hash} is corrupt (${problem})`, { details: { hash } });
      }
      return rec.subarray(RECORD_HEADER_BYTES);
    }
  }

  /** Appends a tombstone for a chunk in the log; resolves with its size once the tombstone is durable. */
  async delete(hash: string): Promise<number | undefined> {
    // Out of the index before the tombstone is queued: a compaction must not queue a copy of it after the tombstone.
    const old = this.dropEntry(hash);
    if (!old) return undefined;
    try {
      this.keptTombstone(await this.appendRaw(encodeTombstone(hash)));
    } catch (err) {
      // Not written: the chunk is still there, unless a compaction dropped its segment meanwhile.
      if (!this.index.has(hash) && this.segments.has(old.seg)) this.setEntry(hash, old);
      throw err;
    }
    this.maybeCompact();
    return old.len;
  }

  /** Starts compacting sealed segments that are mostly dead, one at a time, unless that is under way. */
  maybeCompact(): void {
    if (this.compacting || this.closing) return;
    const pick = [...this.segments].find(([seq, s]) => seq !== this.writer.activeSeq && !s.stuck && this.isMostlyDead(s));
    if (!pick) return;
    this.compacting = compactSegment(this, pick[0])
      .then((outcome) => {
        if (outcome === "done") this.compactions++;
        else pick[1].stuck = true;
        if (outcome === "later") this.deferred = pick[1];
      })
      .catch((err) => {
        pick[1].stuck = true;
        this.log.warn("chunk log compaction failed", { segment: pick[0], err });
      })
      .finally(() => {
        this.compacting = undefined;
        this.maybeCompact();
      });
  }

  private isMostlyDead(s: SegmentInfo): boolean {
    const dead = s.size - SEGMENT_HEADER_BYTES - s.live;
    return dead >= this.minDead && dead > this.ratio * (s.size - SEGMENT_HEADER_BYTES);
  }

  /** Resolves once no compaction is under way or due. */
  async idle(): Promise<void> {
    while (this.compacting) await this.compacting;
  }

  /** Lets a compaction under way finish, flushes and closes. */
  async close(): Promise<void> {
    this.closing = true;
    await this.idle();
    await this.writer.close();
  }
}

async function readAt(file: string, position: number, length: number): Promise<Buffer> {
  const fh = await fs.open(file, "r");
  try {
    const buf = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await fh.read(buf, got, length - got, position + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got);
  } finally {
    await fh.close();
  }
}
