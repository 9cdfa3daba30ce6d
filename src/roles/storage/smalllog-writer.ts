import fs from "node:fs/promises";
import path from "node:path";
import { DfsError } from "../../protocol/errors.js";
import type { Logger } from "../../log.js";
import { crashPoint } from "../../fault.js";
import { syncDir, writeAt } from "../durable-file.js";
import { SEGMENT_HEADER_BYTES, segmentHeader, segmentName } from "./smalllog-format.js";
import { synced } from "../../fsyncs.js";

/** A batch (one write + fdatasync) holds at most this many bytes, unless one record alone is larger. */
const MAX_BATCH_BYTES = 4 * 1024 * 1024;

export interface LogWriterStats {
  /** Records written and fsynced. */
  records: number;
  /** Group commits (one write + fdatasync of the active segment). */
  fsyncs: number;
}

/** Where a record landed: its segment and the offset of its header there. */
export interface Placed {
  seg: number;
  off: number;
}

export interface ActiveSegment {
  seq: number;
  fh: fs.FileHandle;
  /** Good bytes in the file: where the next record goes. */
  size: number;
}

interface Waiter {
  buf: Buffer;
  resolve: (at: Placed) => void;
  reject: (err: Error) => void;
}

/** Makes a new, empty segment durable: header written and fsynced, then the folder fsynced once. */
export async function createSegment(dir: string, seq: number): Promise<ActiveSegment> {
  const fh = await fs.open(path.join(dir, segmentName(seq)), "wx+", 0o644);
  try {
    await fh.write(segmentHeader(seq), 0, SEGMENT_HEADER_BYTES, 0);
    await synced(fh.sync());
    await syncDir(dir);
  } catch (err) {
    await fh.close();
    throw err;
  }
  return { seq, fh, size: SEGMENT_HEADER_BYTES };
}

/**
 * The appending side of the log, in the style of the directory's journal: `append` resolves once its record
 * is written and fdatasynced; records appended while a flush runs go into the next single write + fdatasync.
 * A batch that does not fit the active segment starts a new one. A write that fails is cut off again and
 * only its batch fails; a failed fdatasync (after which the file's state is unknown) fails the log for good.
 */
export class LogWriter {
  readonly stats: LogWriterStats = { records: 0, fsyncs: 0 };
  private pending: Waiter[] = [];
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;
  private closed = false;

  constructor(
    private readonly dir: string,
    private active: ActiveSegment,
    private readonly segmentBytes: number,
    private readonly log: Logger,
    /** Called when a new segment becomes the active one, before any record in it is acknowledged. */
    private readonly onSegment: (seq: number) => void,
  ) {}

  /** The segment records go to now. */
  get activeSeq(): number {
    return this.active.seq;
  }

  append(buf: Buffer): Promise<Placed> {
    if (this.closed) return Promise.reject(new DfsError("UNAVAILABLE", "chunk log closed"));
    if (this.failure) return Promise.reject(this.failure);
    const done = new Promise<Placed>((resolve, reject) => this.pending.push({ buf, resolve, reject }));
    this.kick();
    return done;
  }

  /** Flushes what was appended, then refuses every later append and closes the file. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.flushing) await this.flushing;
    await this.active.fh.close().catch(() => undefined);
  }

  private kick(): void {
    if (this.flushing) return;
    this.flushing = this.loop().finally(() => {
      this.flushing = undefined;
      // Appends made between the loop's last check and now found `flushing` still set.
      if (this.pending.length > 0 && !this.failure) this.kick();
    });
  }

  private takeBatch(room: number): { data: Buffer; waiters: Waiter[] } {
    let n = 0;
    let bytes = 0;
    const limit = Math.min(MAX_BATCH_BYTES, room);
    while (n < this.pending.length && (n === 0 || bytes + this.pending[n]!.buf.length <= limit)) {
      bytes += this.pending[n]!.buf.length;
      n++;
    }
    const waiters = this.pending.splice(0, n);
    return { data: n === 1 ? waiters[0]!.buf : Buffer.concat(waiters.map((w) => w.buf), bytes), waiters };
  }

  private async loop(): Promise<void> {
    while (this.pending.length > 0 && !this.failure) {
      try {
        if (this.active.size > SEGMENT_HEADER_BYTES && this.active.size + this.pending[0]!.buf.length > this.segmentBytes) await this.roll();
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      const { data, waiters } = this.takeBatch(this.segmentBytes - this.active.size);
      const start = this.active.size;
      try {
        await writeAt(this.active.fh, data, start);
      } catch (err) {
        if (await this.cutBack(start)) {
          for (const w of waiters) w.reject(err as Error);
          continue;
        }
        for (const w of waiters) w.reject(err as Error);
        this.fail(err as Error);
        return;
      }
      crashPoint("smalllog-before-fsync");
      try {
        await synced(this.active.fh.datasync());
      } catch (err) {
        for (const w of waiters) w.reject(err as Error);
        this.fail(err as Error);
        return;
      }
      this.active.size = start + data.length;
      this.stats.fsyncs++;
      this.stats.records += waiters.length;
      let off = start;
      for (const w of waiters) {
        w.resolve({ seg: this.active.seq, off });
        off += w.buf.length;
      }
    }
  }

  /** Seals the active segment and starts the next. */
  private async roll(): Promise<void> {
    const next = await createSegment(this.dir, this.active.seq + 1);
    const sealed = this.active;
    this.active = next;
    await sealed.fh.close().catch(() => undefined);
    this.onSegment(next.seq);
  }

  /** Removes what a failed write may have left past `size`; false when even that fails. */
  private async cutBack(size: number): Promise<boolean> {
    try {
      await this.active.fh.truncate(size);
      return true;
    } catch (err) {
      this.log.error("chunk log: could not cut a failed write", { err });
      return false;
    }
  }

  private fail(err: Error): void {
    if (!this.failure) {
      this.failure = new DfsError("UNAVAILABLE", `chunk log write failed: ${err.message}`, { cause: err });
      this.log.error("chunk log failed", { err });
    }
    const waiters = this.pending;
    this.pending = [];
    for (const w of waiters) w.reject(this.failure);
  }
}
