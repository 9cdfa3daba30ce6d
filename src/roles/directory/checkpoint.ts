import type { Database } from "sql.js";
import { DfsError } from "../../protocol/errors.js";
import type { Logger } from "../../log.js";
import { decodePayload } from "./journal-format.js";
import { firstRot, readMetaImage, type MetaImage, type MergedRecord } from "./meta-image.js";
import { installSnapshot, snapshotHeader } from "./snapshot-file.js";
import { loadSqlJs, run } from "./sql.js";

/** How records become rows: the schema of an empty database and the one function that applies a record. */
export interface Schema<R> {
  schema: string;
  /** Brings a database loaded from an older snapshot to the current layout (idempotent); runs before replay. */
  upgrade?: (db: Database) => void;
  apply: (db: Database, rec: R) => void;
}

/** A checkpoint: snapshot `gen` built from the folders' snapshot and journals below `gen`, written into each. */
export interface CheckpointJob {
  dirs: string[];
  gen: number;
  signal?: AbortSignal;
}

export interface CheckpointResult {
  gen: number;
  bytes: number;
  records: number;
  ms: number;
  /** Peak resident set of the process that built it. */
  peakRssBytes: number;
}

/** Runs a checkpoint somewhere (in this process, or in a process of its own); rejects with a DfsError. */
export type Checkpointer = (job: CheckpointJob) => Promise<CheckpointResult>;

export function applyInTx<R>(db: Database, apply: (db: Database, rec: R) => void, rec: R): void {
  run(db, "BEGIN");
  try {
    apply(db, rec);
  } catch (err) {
    try {
      db.exec("ROLLBACK");
    } catch {
      // the failed statement may already have ended the transaction
    }
    throw err;
  }
  run(db, "COMMIT");
}

/** A database from a snapshot image, or an empty one with the schema; either way in the current layout. */
export async function openDatabase<R>(image: Uint8Array | undefined, s: Schema<R>): Promise<Database> {
  const SQL = await loadSqlJs();
  // sql.js copies the image with `slice()`, which on a Node Buffer is a view: the database would then write
  // into the caller's bytes (the snapshot that start-up repair copies to other folders). As a plain
  // Uint8Array, `slice()` copies.
  const db = image ? new SQL.Database(new Uint8Array(image.buffer, image.byteOffset, image.byteLength)) : new SQL.Database();
  // Our journal is what makes changes durable; SQLite's own rollback journal in sql.js's in-memory file
  // system only costs a file create and delete per transaction (statement journals and sorts likewise
  // use temp files unless temp_store is MEMORY). MEMORY keeps ROLLBACK working. Nobody else opens this
  // database, so it may keep its lock: otherwise every statement re-locks and re-checks the file through
  // the emulated file system, which made a one-row SELECT cost ~13 µs instead of ~1 µs.
  db.exec("PRAGMA journal_mode=MEMORY; PRAGMA synchronous=OFF; PRAGMA temp_store=MEMORY; PRAGMA locking_mode=EXCLUSIVE;");
  if (!image) db.exec(s.schema);
  s.upgrade?.(db);
  return db;
}

/** Records to replay: every intact record before the first damage (which the caller has checked is a torn tail). */
export function replayable(img: MetaImage): MergedRecord[] {
  return img.gens.flatMap((g) => {
    const cut = g.damage[0]?.offset ?? Infinity;
    return g.records.filter((r) => r.offset < cut);
  });
}

/** Applies every record; one the schema refuses makes the metadata unusable as it stands (CORRUPT). */
export function replayAll<R>(db: Database, records: MergedRecord[], apply: (db: Database, rec: R) => void): void {
  for (const r of records) {
    try {
      applyInTx(db, apply, decodePayload<R>(r.payload));
    } catch (err) {
      throw new DfsError("CORRUPT", `the record at byte ${r.offset} of ${r.file} is refused at replay (${(err as Error).message})`, {
        cause: err,
        details: { file: r.file, offset: r.offset, reason: "refused at replay" },
      });
    }
  }
}

/**
 * The folders' metadata as start-up reads it: their merged image, and a database (made by `open`) with
 * every replayable record applied. Damage that may not be cut and records refused at replay reject
 * through `refuse`, which words the CORRUPT error for the caller.
 */
export async function loadReplayed<R>(
  dirs: string[],
  s: Schema<R>,
  open: (image: Uint8Array | undefined, s: Schema<R>) => Promise<Database>,
  refuse: (err: unknown) => unknown,
): Promise<{ img: MetaImage; db: Database; replayed: number }> {
  const img = await readMetaImage(dirs).catch((err) => Promise.reject(refuse(err)));
  const bad = damageError(img);
  if (bad) throw refuse(bad);
  const db = await open(img.base?.data, s);
  const records = replayable(img);
  try {
    replayAll(db, records, s.apply);
  } catch (err) {
    db.close();
    throw refuse(err);
  }
  return { img, db, replayed: records.length };
}

/** A CORRUPT error for damage that may not be cut, naming the file and the offset. */
export function damageError(img: MetaImage): DfsError | undefined {
  const rot = firstRot(img);
  if (!rot) return undefined;
  const { gen, damage } = rot;
  const files = gen.copies.map((c) => c.file).join(" and ");
  return new DfsError("CORRUPT", `journal ${files} is damaged at byte ${damage.offset} (${damage.reason}) and records written after it are intact, so this is not a torn write`, {
    details: { file: gen.copies[0]?.file, offset: damage.offset, reason: damage.reason },
  });
}

/**
 * Builds snapshot `job.gen` from the folders' newest snapshot and the journals below `job.gen` (all closed)
 * and installs it in every folder. Any damage or refused record fails it: the caller still has the truth.
 */
export async function buildCheckpoint<R>(s: Schema<R>, job: CheckpointJob, log: Logger): Promise<CheckpointResult> {
  const t0 = performance.now();
  const img = await readMetaImage(job.dirs, { below: job.gen });
  const bad = damageError(img);
  if (bad) throw bad;
  if (img.baseGen >= job.gen) throw new DfsError("CONFLICT", `the folders already hold snapshot generation ${img.baseGen}`);
  job.signal?.throwIfAborted();
  const db = await openDatabase(img.base?.data, s);
  let data: Uint8Array;
  const records = replayable(img);
  try {
    replayAll(db, records, s.apply);
    job.signal?.throwIfAborted();
    data = db.export();
  } finally {
    db.close();
  }
  img.base = undefined; // the old image is garbage from here on
  await new Promise((r) => setImmediate(r)); // lets a cancellation that arrived during the export be seen
  job.signal?.throwIfAborted();
  const header = snapshotHeader(job.gen, data);
  const failed: string[] = [];
  for (const dir of job.dirs) {
    try {
      await installSnapshot(dir, job.gen, [header, data], job.signal);
    } catch (err) {
      if (job.signal?.aborted) throw err;
      failed.push(`${dir}: ${(err as Error).message}`);
      log.error("checkpoint-install-failed", { dir, gen: job.gen, err });
    }
  }
  if (failed.length > 0) throw new DfsError("UNAVAILABLE", `snapshot ${job.gen} could not be written to ${failed.join("; ")}`);
  return { gen: job.gen, bytes: data.length, records: records.length, ms: performance.now() - t0, peakRssBytes: process.resourceUsage().maxRSS * 1024 };
}
