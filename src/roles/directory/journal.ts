import fs from "node:fs/promises";
import path from "node:path";
import { DfsError } from "../../protocol/errors.js";
import { logger, type Logger } from "../../log.js";
import { syncDir } from "../durable-file.js";
import { fileHeader, setBatchOffset } from "./journal-format.js";
import { synced } from "../../fsyncs.js";

/** A batch (one write + fsync) holds at most this many bytes, unless one record alone is larger. */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;

export interface JournalStats {
  /** Records written and fsynced. */
  records: number;
  /** Group commits (one write + fsync per copy). */
  fsyncs: number;
}

export interface JournalOptions {
  log?: Logger;
  /** Counters to add to; lets several journals (generations) share one set. */
  stats?: JournalStats;
  /** Nothing is written to this journal before this settles (the previous generation's last flush). */
  after?: Promise<unknown>;
  /** One copy failed and was dropped; the others go on. Not called for the last copy: the journal fails instead. */
  onDrop?: (file: string, err: Error) => void;
}

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Copy {
  file: string;
  fh: fs.FileHandle;
}

/**
 * The writer side of one journal generation, kept as identical copies in one or more folders.
 * `appendEncoded` resolves after the record is written and fsynced in every copy still in use; appends
 * arriving while a flush runs are grouped into the next single write + fsync. A copy whose write or
 * fsync fails is dropped (and reported) while another remains; when the last fails, the journal fails
 * for good and refuses every later append.
 */
export class Journal {
  readonly stats: JournalStats;
  /** Bytes in the file, including records not yet flushed. */
  bytes: number;
  private copies: Copy[] = [];
  private readonly ready: Promise<void>;
  private pending: Buffer[] = [];
  private waiters: Waiter[] = [];
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;
  private closed: Promise<void> | undefined;
  private readonly log: Logger;

  private constructor(
    private readonly names: string[],
    size: number,
    private readonly opts: JournalOptions,
    open: (file: string) => Promise<fs.FileHandle>,
  ) {
    this.stats = opts.stats ?? { records: 0, fsyncs: 0 };
    this.log = opts.log ?? logger("journal");
    this.bytes = size;
    this.ready = (async () => {
      const opened = await Promise.allSettled(names.map(open));
      opened.forEach((r, i) => {
        if (r.status === "fulfilled") this.copies.push({ file: names[i]!, fh: r.value });
      });
      const failed = opened.flatMap((r, i) => (r.status === "rejected" ? [{ file: names[i]!, err: r.reason as Error }] : []));
      if (this.copies.length === 0) throw failed[0]?.err ?? new DfsError("UNAVAILABLE", "no journal file to write");
      for (const f of failed) this.drop(f.file, f.err);
      // If the previous generation failed, its tail is lost: writing here would leave a gap before these records.
      if (opts.after) await opts.after;
    })();
    this.ready.catch((err) => this.fail(err));
  }

  /** Appends to existing copies that each hold exactly `size` good bytes (start-up made them so). */
  static resume(files: string[], size: number, opts: JournalOptions = {}): Journal {
    return new Journal(files, size, opts, (file) => fs.open(file, "a"));
  }

  /**
   * Starts brand-new copies of generation `gen` without waiting: appends may be made at once and are
   * written when the files are ready (and `opts.after` has settled).
   */
  static create(files: string[], gen: number, opts: JournalOptions = {}): Journal {
    const header = fileHeader(gen);
    return new Journal(files, header.length, opts, async (file) => {
      const fh = await fs.open(file, "w");
      try {
        await writeAll(fh, header);
        await synced(fh.sync());
        await syncDir(path.dirname(file));
      } catch (err) {
        await fh.close();
        throw err;
      }
      return fh;
    });
  }

  /** The copies still written. */
  get files(): string[] {
    return this.copies.map((c) => c.file);
  }

  /** Resolves once the files are open (and durably exist). */
  whenReady(): Promise<void> {
    return this.ready;
  }

  /** Why an append would be refused now: closed, or failed (a failed journal refuses every later append). */
  get refusal(): Error | undefined {
    if (this.closed) return new DfsError("UNAVAILABLE", `journal closed: ${this.names.join(", ")}`);
    return this.failure;
  }

  /** Appends a record framed by `encodeRecord`. */
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

  /** Flushes and closes the files; idempotent. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      try {
        await this.ready;
        await this.flush();
      } finally {
        const copies = this.copies;
        this.copies = [];
        await Promise.all(copies.map((c) => c.fh.close().catch(() => undefined)));
      }
    })();
    return this.closed;
  }

  private kick(): void {
    if (this.flushing) return;
    this.flushing = this.loop().finally(() => {
      this.flushing = undefined;
      // Appends made between the loop's last check and now found `flushing` still set.
      if (this.pending.length > 0 && !this.failure) this.kick();
    });
  }

  /** Takes the next batch off `pending` and marks each record with its place in the batch. */
  private takeBatch(): { data: Buffer; waiters: Waiter[] } {
    let n = 0;
    let bytes = 0;
    while (n < this.pending.length && (n === 0 || bytes + this.pending[n]!.length <= MAX_BATCH_BYTES)) {
      setBatchOffset(this.pending[n]!, bytes);
      bytes += this.pending[n]!.length;
      n++;
    }
    const batch = this.pending.splice(0, n);
    const waiters = this.waiters.splice(0, n);
    return { data: batch.length === 1 ? batch[0]! : Buffer.concat(batch, bytes), waiters };
  }

  private async loop(): Promise<void> {
    try {
      await this.ready;
    } catch {
      return; // fail() already rejected the waiters
    }
    while (this.pending.length > 0 && !this.failure) {
      const { data, waiters } = this.takeBatch();
      const results = await Promise.allSettled(this.copies.map(async (c) => {
        await writeAll(c.fh, data);
        await synced(c.fh.sync());
      }));
      const failed = results.flatMap((r, i) => (r.status === "rejected" ? [{ copy: this.copies[i]!, err: r.reason as Error }] : []));
      if (failed.length === this.copies.length) {
        // Every copy's tail is now unknown: stop for good; the next start-up cuts whatever is torn.
        const err = failed[0]!.err;
        for (const w of waiters) w.reject(err);
        this.fail(err);
        return;
      }
      for (const f of failed) this.drop(f.copy.file, f.err);
      this.stats.fsyncs++;
      this.stats.records += waiters.length;
      for (const w of waiters) w.resolve();
    }
  }

  private drop(file: string, err: Error): void {
    const copy = this.copies.find((c) => c.file === file);
    this.copies = this.copies.filter((c) => c.file !== file);
    void copy?.fh.close().catch(() => undefined);
    if (this.opts.onDrop) this.opts.onDrop(file, err);
    else this.log.error("journal-copy-dropped", { file, err, remaining: this.copies.length });
  }

  private fail(err: Error): void {
    if (!this.failure) {
      this.failure = new DfsError("UNAVAILABLE", `journal write failed: ${err.message}`, { cause: err });
      this.log.error("journal-failed", { files: this.names.join(","), err });
    }
    const waiters = this.waiters;
    this.pending = [];
    this.waiters = [];
    for (const w of waiters) w.reject(this.failure);
  }
}

async function writeAll(fh: fs.FileHandle, data: Buffer): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await fh.write(data, off, data.length - off);
    off += bytesWritten;
  }
}
