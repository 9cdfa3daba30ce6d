import fs from "node:fs/promises";
import path from "node:path";
import CRC32 from "crc-32";
import { pack, unpack } from "msgpackr";
import { DfsError } from "../../protocol/errors.js";
import { logger, type Logger } from "../../log.js";
import { syncDir } from "../durable-file.js";

/**
 * Append-only journal file. Each record on disk is
 *   u32 LE payload length | i32 LE CRC-32 of the payload | payload (msgpackr `pack` of the record)
 * A torn or corrupt tail is detected by the length/CRC check and cut off when the file is opened for append.
 */
export const HEADER_BYTES = 8;
/** Longer records are treated as corruption (a torn length field reads as garbage). */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024;

export interface JournalStats {
  /** Records written and fsynced. */
  records: number;
  /** fsync calls (one per group-commit batch). */
  fsyncs: number;
}

export interface JournalContents<R> {
  records: R[];
  /** Byte offset just past the last good record. */
  end: number;
  /** File size; more than `end` when the tail is torn or corrupt. */
  size: number;
  /** Why reading stopped before `size`, if it did. */
  problem?: string;
}

export function encodeRecord(rec: unknown): Buffer {
  const payload = pack(rec);
  if (payload.length > MAX_RECORD_BYTES) {
    throw new DfsError("BAD_REQUEST", `journal record too large: ${payload.length} bytes`);
  }
  const out = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  out.writeUInt32LE(payload.length, 0);
  out.writeInt32LE(CRC32.buf(payload), 4);
  payload.copy(out, HEADER_BYTES);
  return out;
}

/** Decodes a whole journal image: the good records and where they end. */
export function decodeJournal<R>(buf: Uint8Array): JournalContents<R> {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const records: R[] = [];
  let off = 0;
  let problem: string | undefined;
  while (off < b.length) {
    if (b.length - off < HEADER_BYTES) {
      problem = "short header";
      break;
    }
    const len = b.readUInt32LE(off);
    const crc = b.readInt32LE(off + 4);
    if (len > MAX_RECORD_BYTES) {
      problem = `absurd length ${len}`;
      break;
    }
    if (b.length - off - HEADER_BYTES < len) {
      problem = "short payload";
      break;
    }
    const payload = b.subarray(off + HEADER_BYTES, off + HEADER_BYTES + len);
    if (CRC32.buf(payload) !== crc) {
      problem = "crc mismatch";
      break;
    }
    let rec: R;
    try {
      rec = unpack(payload) as R;
    } catch (err) {
      problem = `undecodable payload: ${(err as Error).message}`;
      break;
    }
    records.push(rec);
    off += HEADER_BYTES + len;
  }
  return { records, end: off, size: b.length, problem };
}

/** Reads a journal file; a missing file reads as empty. */
export async function readJournal<R>(file: string): Promise<JournalContents<R>> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { records: [], end: 0, size: 0 };
    throw err;
  }
  return decodeJournal<R>(buf);
}

export interface JournalOptions {
  log?: Logger;
  /** Counters to add to; lets several journals (generations) share one set. */
  stats?: JournalStats;
  /** Nothing is written to this journal before this settles (the previous generation's last flush). */
  after?: Promise<unknown>;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * The writer side of a journal. `append` encodes at once and resolves after the record is written and
 * fsynced; appends arriving while a flush runs are grouped into the next single write + fsync.
 */
export class Journal<R = unknown> {
  readonly stats: JournalStats;
  /** Bytes of good records in the file, including those not yet flushed. */
  bytes = 0;
  private fh: fs.FileHandle | undefined;
  private readonly ready: Promise<void>;
  private pending: Buffer[] = [];
  private waiters: Waiter[] = [];
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;
  private closed: Promise<void> | undefined;

  private constructor(
    readonly file: string,
    private readonly log: Logger,
    opts: JournalOptions,
    open: () => Promise<fs.FileHandle>,
  ) {
    this.stats = opts.stats ?? { records: 0, fsyncs: 0 };
    this.ready = (async () => {
      this.fh = await open();
      // If the previous generation failed, its tail is lost: writing here would leave a gap before these records.
      if (opts.after) await opts.after;
    })();
    this.ready.catch((err) => this.fail(err));
  }

  /**
   * Opens `file` for append, creating it if missing; a torn or corrupt tail is truncated first.
   * Returns the journal and the good records that were already in it.
   */
  static async open<R>(file: string, opts: JournalOptions = {}): Promise<{ journal: Journal<R>; contents: JournalContents<R> }> {
    const log = opts.log ?? logger("journal");
    const contents = await readJournal<R>(file);
    const journal = new Journal<R>(file, log, opts, async () => {
      const created = contents.size === 0;
      const fh = await fs.open(file, "a");
      try {
        if (contents.end < contents.size) {
          await fh.truncate(contents.end);
          await fh.sync();
          log.warn("journal-tail-cut", { file, cut: contents.size - contents.end, kept: contents.end, reason: contents.problem });
        }
        if (created) await syncDir(path.dirname(file));
      } catch (err) {
        await fh.close();
        throw err;
      }
      return fh;
    });
    journal.bytes = contents.end;
    await journal.ready;
    return { journal, contents };
  }

  /**
   * Starts a brand-new (empty) journal file without waiting: appends may be made at once and are written
   * when the file is ready (and `opts.after` has settled). `ready()` resolves once the file exists durably.
   */
  static create<R>(file: string, opts: JournalOptions = {}): Journal<R> {
    const log = opts.log ?? logger("journal");
    return new Journal<R>(file, log, opts, async () => {
      const fh = await fs.open(file, "w");
      try {
        await fh.sync();
        await syncDir(path.dirname(file));
      } catch (err) {
        await fh.close();
        throw err;
      }
      return fh;
    });
  }

  /** Resolves once the file is open (and durably exists). */
  whenReady(): Promise<void> {
    return this.ready;
  }

  /** Why an append would be refused now: closed, or failed (a failed journal refuses every later append). */
  get refusal(): Error | undefined {
    if (this.closed) return new DfsError("UNAVAILABLE", `journal closed: ${this.file}`);
    return this.failure;
  }

  append(rec: R): Promise<void> {
    return this.appendEncoded(encodeRecord(rec));
  }

  /** Appends a record already framed by {@link encodeRecord}. */
  appendEncoded(buf: Buffer): Promise<void> {
    const refusal = this.refusal;
    if (refusal) return Promise.reject(refusal);
    this.pending.push(buf);
    this.bytes += buf.length;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.kick();
    return done;
  }

  /** Resolves when every record appended so far is on disk. */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.failure) throw this.failure;
  }

  /** Flushes and closes the file; idempotent. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      try {
        await this.ready;
        await this.flush();
      } finally {
        await this.fh?.close();
        this.fh = undefined;
      }
    })();
    return this.closed;
  }

  private kick(): void {
    if (this.flushing) return;
    this.flushing = this.loop().finally(() => {
      this.flushing = undefined;
      // Appends made between the loop's last check and now found `flushing` still set.
      if (this.pending.length > 0) this.kick();
    });
  }

  private async loop(): Promise<void> {
    try {
      await this.ready;
    } catch {
      return; // fail() already rejected the waiters
    }
    while (this.pending.length > 0 && !this.failure) {
      const batch = this.pending;
      const waiters = this.waiters;
      this.pending = [];
      this.waiters = [];
      try {
        const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch);
        let off = 0;
        while (off < data.length) {
          const { bytesWritten } = await this.fh!.write(data, off, data.length - off);
          off += bytesWritten;
        }
        await this.fh!.sync();
        this.stats.fsyncs++;
        this.stats.records += batch.length;
        for (const w of waiters) w.resolve();
      } catch (err) {
        // The file's tail is now unknown: stop for good, the next open will cut whatever is torn.
        for (const w of waiters) w.reject(err as Error);
        this.fail(err as Error);
      }
    }
  }

  private fail(err: Error): void {
    if (!this.failure) {
      this.failure = new DfsError("UNAVAILABLE", `journal write failed: ${err.message}`, { cause: err });
      this.log.error("journal-failed", { file: this.file, err });
    }
    const waiters = this.waiters;
    this.pending = [];
    this.waiters = [];
    for (const w of waiters) w.reject(this.failure);
  }
}
