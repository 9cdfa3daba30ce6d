import fs from "node:fs/promises";
import path from "node:path";
import type { Database } from "sql.js";
import { DfsError } from "../../protocol/errors.js";
import { logger, type Logger } from "../../log.js";
import { applyInTx, buildCheckpoint, loadReplayed, type Checkpointer, type Schema } from "./checkpoint.js";
import { encodeRecord } from "./journal-format.js";
import { Journal, type JournalStats } from "./journal.js";
import { exportLive, openLiveDatabase } from "./live-db.js";
import { lockFolders, removeJournalsBelow, repairFolders } from "./meta-folders.js";
import { journalName } from "./meta-image.js";
import { installSnapshot, snapshotHeader } from "./snapshot-file.js";

/*
 * Durable metadata: an in-memory sql.js database, rebuilt at start-up from a snapshot plus journals, kept
 * as identical copies in one or more folders (each best on a disk of its own).
 *
 * Files in each folder:
 *   snapshot.db        the newest snapshot (snapshot-file.ts): every record of journals < its generation G
 *   snapshot.prev.db   the one before it, kept with the journals since, in case snapshot.db is damaged
 *   snapshot.*.tmp     a snapshot being written; removed at start-up
 *   journal.<G>        the journals by generation (journal-format.ts); replayed in order for every G >= the snapshot's
 *   LOCK               the pid of the process using the folder
 *   damaged-<time>/    damaged copies set aside at start-up or by recovery, never deleted
 *
 * A checkpoint (snapshot) never exports the live database: the store only starts journal G+1, and a
 * checkpointer (by default a process of its own, as HDFS's checkpoint node) builds snapshot G+1 from the
 * last snapshot and the closed journals below G+1 with the same code start-up uses, and installs it. When
 * that fails because the folders' bytes cannot reproduce what is in memory (damage that appeared while
 * running, or a record the schema now refuses), the store writes one snapshot from memory instead: the
 * database is the truth that replies were given from.
 *
 * Start-up reads every folder and starts from what they hold together (see meta-image.ts). A torn tail
 * (the end of the last write, never acknowledged) is cut; damage followed by later writes, a damaged
 * snapshot with nothing to rebuild it from, or a record refused at replay stop it with a CORRUPT error
 * naming the file and the byte: `dfs directory recover` then keeps what still applies. Copies that are
 * damaged or behind are repaired from the good bytes, and the log says so. A folder whose writes fail
 * while running is dropped (logged) while another remains; the next start-up brings it up to date.
 */

export interface MetaStoreInit<R> extends Schema<R> {
  /** Metadata folders; every one holds a full copy. */
  dirs: string[];
  /** Journal records between automatic snapshots (default 10,000); also every 64 MiB of journal. */
  snapshotEvery?: number;
  log?: Logger;
  /** Builds snapshots; default: in this process, with the same code (blocking while it runs). */
  checkpointer?: Checkpointer;
  /** The command that repairs these folders, named in the error when they are damaged. */
  recoverHint?: string;
}

export interface MetaStoreStats {
  /** Records made durable since open. */
  records: number;
  fsyncs: number;
  snapshots: number;
  /** Size of the current journal generation, including records not yet flushed. */
  journalBytes: number;
  /** Size of the newest snapshot; null before the first. */
  snapshotBytes: number | null;
  /** Folders still written. */
  dirs: string[];
}

export interface MetaStore<R> {
  readonly db: Database;
  /** Applies rec in one SQL transaction synchronously (a throw rolls back and journals nothing), then journals it. */
  commit(rec: R): { durable: Promise<void> };
  /** Resolves when everything committed so far is on disk. */
  barrier(): Promise<void>;
  /** Writes a snapshot now (after any running one). */
  snapshot(): Promise<void>;
  readonly stats: MetaStoreStats;
  /** Stops a running checkpoint, flushes, closes the journal and the database; idempotent. */
  close(): Promise<void>;
}

const JOURNAL_SNAPSHOT_BYTES = 64 * 1024 * 1024;

export async function openMetaStore<R>(init: MetaStoreInit<R>): Promise<MetaStore<R>> {
  const dirs = [...new Set(init.dirs.map((d) => path.resolve(d)))];
  const log = init.log ?? logger("metastore");
  for (const dir of dirs) await fs.mkdir(dir, { recursive: true });
  const release = await lockFolders(dirs);
  const refuse = (err: unknown) => {
    if (!(err instanceof DfsError) || err.code !== "CORRUPT") return err;
    const hint = init.recoverHint ?? "dfs directory recover";
    return new DfsError("CORRUPT", `${err.message}; the directory does not start on damaged metadata: run \`${hint}\` to keep every record that still applies and list what is lost`, {
      cause: err,
      details: err.details,
    });
  };
  try {
    const { img, db, replayed } = await loadReplayed(dirs, init, openLiveDatabase, refuse);
    try {
      await repairFolders(img, log);
      const last = img.gens.at(-1);
      const stats: JournalStats = { records: 0, fsyncs: 0 };
      const store = new Store<R>(db, init, log, dirs, img.baseGen, stats, release);
      if (img.base) store.snapshotBytes = (await fs.stat(img.base.file)).size;
      // A journal of the old format is read, never appended to: the next generation starts in the new one.
      if (last?.format === 2) store.resume(last.gen, last.good.length);
      else store.start(last ? last.gen + 1 : img.baseGen);
      await store.ready();
      log.info("metastore-open", { dirs: dirs.join(","), snapshotGen: img.base?.gen ?? 0, journalGen: store.generation, replayed });
      return store;
    } catch (err) {
      db.close();
      throw err;
    }
  } catch (err) {
    await release();
    throw err;
  }
}

class Store<R> implements MetaStore<R> {
  private readonly snapshotEvery: number;
  private readonly checkpointer: Checkpointer;
  private journal!: Journal;
  private gen = 0;
  private live: string[];
  private sinceSnapshot = 0;
  private snapshots = 0;
  private lastDurable: Promise<void> = Promise.resolve();
  private snapChain: Promise<void> = Promise.resolve();
  private autoSnap: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private closing: Promise<void> | undefined;
  private finished = false;

  constructor(
    readonly db: Database,
    private readonly init: MetaStoreInit<R>,
    private readonly log: Logger,
    dirs: string[],
    /** The snapshot start-up would replay from (1: none); journals from the one before it are kept. */
    private baseGen: number,
    private readonly jstats: JournalStats,
    private readonly release: () => Promise<void>,
  ) {
    this.live = dirs;
    this.snapshotEvery = Math.max(1, init.snapshotEvery ?? 10000);
    this.checkpointer = init.checkpointer ?? ((job) => buildCheckpoint(init, job, log.child("checkpoint")));
  }

  snapshotBytes: number | null = null;

  get generation(): number {
    return this.gen;
  }

  get stats(): MetaStoreStats {
    return { ...this.jstats, snapshots: this.snapshots, journalBytes: this.journal.bytes, snapshotBytes: this.snapshotBytes, dirs: [...this.live] };
  }

  private journalOpts(after?: Promise<unknown>) {
    return {
      log: this.log,
      stats: this.jstats,
      after,
      onDrop: (file: string, err: Error) => {
        this.live = this.live.filter((d) => d !== path.dirname(file));
        this.log.error("meta-dir-dropped", { dir: path.dirname(file), err, remaining: this.live.join(",") });
      },
    };
  }

  resume(gen: number, size: number): void {
    this.gen = gen;
    this.journal = Journal.resume(this.live.map((d) => path.join(d, journalName(gen))), size, this.journalOpts());
  }

  start(gen: number, after?: Promise<unknown>): void {
    this.gen = gen;
    this.journal = Journal.create(this.live.map((d) => path.join(d, journalName(gen))), gen, this.journalOpts(after));
  }

  ready(): Promise<void> {
    return this.journal.whenReady();
  }

  commit(rec: R): { durable: Promise<void> } {
    if (this.closing) throw new DfsError("UNAVAILABLE", "metadata store is closed");
    const refusal = this.journal.refusal;
    if (refusal) throw refusal;
    const buf = encodeRecord(rec); // before apply: a record that cannot be journaled must not change the db
    applyInTx(this.db, this.init.apply, rec);
    const durable = this.journal.appendEncoded(buf);
    durable.catch(() => undefined); // the journal logs its failure; callers that drop `durable` must not crash us
    this.lastDurable = durable;
    // Also by size: a few huge records (bulk commits) must not leave a long journal to replay at start-up.
    const due = ++this.sinceSnapshot >= this.snapshotEvery || this.journal.bytes > JOURNAL_SNAPSHOT_BYTES;
    if (due && !this.autoSnap) {
      this.autoSnap = this.snapshot()
        .catch((err) => {
          if (!this.closing) this.log.error("snapshot-failed", { dirs: this.live.join(","), err });
        })
        .finally(() => {
          this.autoSnap = undefined;
        });
    }
    return { durable };
  }

  barrier(): Promise<void> {
    // Batches are written in order and a new generation waits for the old one, so the last append settles last.
    return this.lastDurable;
  }

  snapshot(): Promise<void> {
    const run = this.snapChain.then(() => this.checkpoint());
    this.snapChain = run.catch(() => undefined);
    return run;
  }

  /** Starts journal G+1 after the current one (synchronous: nothing is committed in between); returns G+1 and the old one's close. */
  private rotate(): { gen: number; oldClosed: Promise<void> } {
    if (this.finished || this.closing) throw new DfsError("UNAVAILABLE", "metadata store is closed");
    const oldClosed = this.journal.close();
    this.start(this.gen + 1, oldClosed);
    this.sinceSnapshot = 0;
    return { gen: this.gen, oldClosed };
  }

  private async checkpoint(): Promise<void> {
    const t0 = performance.now();
    const { gen, oldClosed } = this.rotate();
    const blockedMs = performance.now() - t0;
    await oldClosed;
    await this.journal.whenReady();
    const dirs = [...this.live];
    let result;
    try {
      result = await this.checkpointer({ dirs, gen, signal: this.abort.signal });
    } catch (err) {
      if (this.closing || !(err instanceof DfsError) || err.code !== "CORRUPT") throw err;
      this.log.error("checkpoint-refused", { gen, err, then: "writing a snapshot from memory" });
      return this.snapshotFromMemory();
    }
    await this.installed(gen, dirs);
    this.snapshotBytes = result.bytes;
    this.log.info("snapshot-written", {
      gen, bytes: result.bytes, records: result.records, ms: Math.round(result.ms),
      loopBlockedMs: blockedMs.toFixed(1), checkpointerPeakRss: result.peakRssBytes,
    });
  }

  /** The snapshot when the folders cannot reproduce memory: export at a rotation, in one synchronous step. */
  private async snapshotFromMemory(): Promise<void> {
    const t0 = performance.now();
    const { gen, oldClosed } = this.rotate();
    const data = exportLive(this.db);
    const blockedMs = performance.now() - t0;
    await oldClosed;
    await this.journal.whenReady();
    const dirs = [...this.live];
    const header = snapshotHeader(gen, data);
    for (const dir of dirs) await installSnapshot(dir, gen, [header, data]);
    await this.installed(gen, dirs);
    this.snapshotBytes = header.length + data.length;
    this.log.warn("snapshot-written-from-memory", { gen, bytes: data.length, loopBlockedMs: blockedMs.toFixed(1) });
  }

  /** After snapshot `gen` is in every folder: the old snapshot is now the previous one, older journals go. */
  private async installed(gen: number, dirs: string[]): Promise<void> {
    await removeJournalsBelow(dirs.filter((d) => this.live.includes(d)), this.baseGen);
    this.baseGen = gen;
    this.snapshots++;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.abort.abort(new DfsError("UNAVAILABLE", "metadata store is closing"));
      await this.autoSnap;
      await this.snapChain;
      this.finished = true;
      try {
        await this.journal.close();
      } finally {
        this.db.close();
        await this.release();
      }
    })();
    return this.closing;
  }
}
