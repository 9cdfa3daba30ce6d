import type { Database } from "sql.js";
import { DfsError } from "../protocol/errors.js";
import { loadStoppedMeta } from "../roles/directory/offline.js";
import { all, get } from "../roles/directory/sql.js";
import {
  COLUMNS, DIRECTORY_SCHEMA_VERSION, DIRECTORY_TABLES, ensureDirectorySchema, namespaceHash, tableExists,
  type DirectoryTable, type NamespaceRow,
} from "./directory-schema.js";
import { openPostgres, type PostgresBackend } from "./postgres.js";
import type { Param, Tx } from "./tx.js";

/*
 * `dfs metadata migrate`: copies a stopped directory's metadata (sql.js snapshot and journals) into an
 * empty PostgreSQL database, then reads the copy back and compares it with the source. The copy goes
 * in batches, one transaction each; `meta` (with the cluster id) comes last, so a database that holds
 * rows but no cluster id is a migration that was cut short.
 */

export interface MigrateOptions {
  /** The directory's metadata folders (DATA/meta and every --meta-dir). */
  dirs: string[];
  url: string;
  /** The command that repairs the folders, named when they are damaged. */
  recoverHint: string;
  /** Rows per INSERT (and per transaction). Default 1000. */
  batchRows?: number;
  /** A line for people about a long copy, at most every `progressEveryMs` (default 2 s). */
  progress?: (line: string) => void;
  progressEveryMs?: number;
}

export interface MigrateReport {
  cluster: string;
  /** Rows copied per table (meta counts the source's rows, not schema_version). */
  rows: Record<DirectoryTable, number>;
  /** The namespace hash, equal on both sides. */
  namespaceHash: string;
  /** Records replayed on top of the snapshot when loading the source. */
  replayed: number;
}

/** Migrates and checks; rejects with a one-line DfsError when the source, the target or the check says no. */
export async function migrateDirectory(opts: MigrateOptions): Promise<MigrateReport> {
  const src = await loadStoppedMeta(opts.dirs, opts.recoverHint, "migrate");
  try {
    const cluster = get(src.db, "SELECT value FROM meta WHERE key = 'cluster'")?.[0];
    if (typeof cluster !== "string") throw new DfsError("NOT_FOUND", `${opts.dirs.join(", ")} holds no dfs metadata (no cluster id); nothing to migrate`);
    const meta = typedMeta(src.db);
    const pg = openPostgres(opts.url, { connections: 1, timeoutMs: 60_000 });
    try {
      await refuseNonEmpty(pg);
      await pg.transact((tx) => ensureDirectorySchema(tx));
      const rows = await copyTables(src.db, pg, meta, opts);
      const hash = await check(src.db, pg, meta, rows, cluster);
      return { cluster, rows, namespaceHash: hash, replayed: src.replayed };
    } finally {
      await pg.close();
    }
  } finally {
    await src.close();
  }
}

/** The sql.js `meta` rows as [key, num, txt]: integers go to `num`, text to `txt`; anything else is refused. */
function typedMeta(db: Database): Param[][] {
  return all(db, "SELECT key, typeof(value), value FROM meta ORDER BY key").map(([key, type, value]) => {
    if (type === "integer") return [key, value, null] as Param[];
    if (type === "real" && Number.isInteger(value)) return [key, value, null] as Param[];
    if (type === "text") return [key, null, value] as Param[];
    throw new DfsError("BAD_REQUEST", `meta key ${String(key)} holds a value of type ${String(type)}, which the PostgreSQL layout has no column for`);
  });
}

/** Refuses a database that already holds directory rows (a fresh `ensureDirectorySchema` alone is empty). */
async function refuseNonEmpty(pg: PostgresBackend): Promise<void> {
  // The first contact: a wrong URL or a server that is down should not keep the command waiting a minute.
  const held = await pg.transact(async (tx) => {
    const tables: string[] = [];
    for (const t of DIRECTORY_TABLES) {
      if (!(await tableExists(tx, t))) continue;
      const where = t === "meta" ? " WHERE key <> 'schema_version'" : "";
      if (await tx.get(`SELECT 1 FROM ${t}${where} LIMIT 1`)) tables.push(t);
    }
    const cluster = tables.includes("meta") ? (await tx.get("SELECT txt FROM meta WHERE key = 'cluster'"))?.[0] : undefined;
    return { tables, cluster };
  }, { timeoutMs: 10_000 });
  if (held.tables.length === 0) return;
  const what = typeof held.cluster === "string"
    ? `the metadata of cluster ${held.cluster}`
    : `rows in ${held.tables.join(", ")} but no cluster id (a migration cut short? drop those tables and run it again)`;
  throw new DfsError("EXISTS", `the metadata database ${pg.url} already holds ${what}; dfs metadata migrate copies only into a database without dfs metadata`);
}

/** Copies every table in batches; answers the rows copied per table. */
async function copyTables(db: Database, pg: PostgresBackend, meta: Param[][], opts: MigrateOptions): Promise<Record<DirectoryTable, number>> {
  const batch = opts.batchRows ?? 1000;
  const counts = {} as Record<DirectoryTable, number>;
  const total = DIRECTORY_TABLES.reduce((n, t) => n + (t === "meta" ? meta.length : sourceCount(db, t)), 0);
  let done = 0;
  let shown = Date.now();
  const report = (table: string) => {
    if (!opts.progress || Date.now() - shown < (opts.progressEveryMs ?? 2000)) return;
    shown = Date.now();
    opts.progress(`copied ${done} of ${total} rows (${table})`);
  };
  for (const table of DIRECTORY_TABLES) {
    counts[table] = 0;
    const rows = table === "meta" ? meta.values() : sourceRows(db, table);
    for (let chunk = take(rows, batch); chunk.length > 0; chunk = take(rows, batch)) {
      await pg.transact((tx) => insertRows(tx, table, chunk));
      counts[table] += chunk.length;
      done += chunk.length;
      report(table);
    }
  }
  return counts;
}

function sourceCount(db: Database, table: DirectoryTable): number {
  return Number(get(db, `SELECT count(*) FROM ${table}`)![0]);
}

/** The rows of a table, streamed from one statement (sql.js holds the database; nobody changes it meanwhile). */
function* sourceRows(db: Database, table: Exclude<DirectoryTable, "meta">): Generator<Param[]> {
  const st = db.prepare(`SELECT ${COLUMNS[table].join(", ")} FROM ${table}`);
  try {
    while (st.step()) yield st.get() as Param[];
  } finally {
    st.free();
  }
}

function take<T>(it: Iterator<T>, n: number): T[] {
  const out: T[] = [];
  while (out.length < n) {
    const r = it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

async function insertRows(tx: Tx, table: DirectoryTable, rows: Param[][]): Promise<void> {
  const cols = COLUMNS[table];
  const one = `(${cols.map(() => "?").join(", ")})`;
  await tx.run(`INSERT INTO ${table}(${cols.join(", ")}) VALUES ${rows.map(() => one).join(", ")}`, rows.flat());
}

/** Reads the copy back: row counts, `meta` and `s3keys` exactly, the cluster id, the namespace hash. Answers the hash. */
async function check(db: Database, pg: PostgresBackend, meta: Param[][], copied: Record<DirectoryTable, number>, cluster: string): Promise<string> {
  const mismatch = (what: string) => new DfsError("CORRUPT", `the copy in ${pg.url} does not match the source: ${what}`);
  const target = await pg.transact(async (tx) => {
    const counts: Record<string, number> = {};
    for (const t of DIRECTORY_TABLES) counts[t] = Number((await tx.get(`SELECT count(*) FROM ${t}`))![0]);
    return { counts, meta: await tx.all("SELECT key, num, txt FROM meta ORDER BY key"), keys: await tx.all(`SELECT ${KEY_COLUMNS} FROM s3keys`) };
  });
  for (const t of DIRECTORY_TABLES) {
    const want = t === "meta" ? meta.length : sourceCount(db, t);
    const extra = t === "meta" ? 1 : 0; // schema_version
    if (copied[t] !== want || target.counts[t] !== want + extra) throw mismatch(`${t} has ${target.counts[t]! - extra} rows, the source ${want}`);
  }
  const wantMeta = [...meta, ["schema_version", DIRECTORY_SCHEMA_VERSION, null]].map((r) => JSON.stringify(r)).sort();
  const gotMeta = target.meta.map((r) => JSON.stringify(r)).sort();
  if (JSON.stringify(wantMeta) !== JSON.stringify(gotMeta)) throw mismatch(`meta holds ${gotMeta.join(" ")}, the source ${wantMeta.join(" ")}`);
  const rowsText = (rows: unknown[][]) => rows.map((r) => JSON.stringify(r.map((v) => (typeof v === "number" ? String(v) : v)))).sort();
  const wantKeys = rowsText(all(db, `SELECT ${KEY_COLUMNS} FROM s3keys`));
  const gotKeys = rowsText(target.keys);
  // Ids only: the secrets are no one's business, not even in an error message.
  if (JSON.stringify(wantKeys) !== JSON.stringify(gotKeys)) throw mismatch(`the S3 access keys differ (${keyIds(gotKeys)}; the source ${keyIds(wantKeys)})`);
  const got = target.meta.find((r) => r[0] === "cluster")?.[2];
  if (got !== cluster) throw mismatch(`cluster id ${String(got)}, the source ${cluster}`);
  const source = sqliteNamespaceHash(db);
  const copy = await pgNamespaceHash(pg);
  if (source !== copy) throw mismatch(`namespace hash ${copy}, the source ${source}`);
  return copy;
}

const KEY_COLUMNS = "id, secret, buckets, created";
const keyIds = (rows: string[]) => rows.map((r) => (JSON.parse(r) as string[])[0]).join(" ") || "none";

/** {@link namespaceHash} of a sql.js directory database. */
export function sqliteNamespaceHash(db: Database): string {
  return namespaceHash(all(db, "SELECT path, version, size, sha256, chunks, meta FROM files") as NamespaceRow[]);
}

/** {@link namespaceHash} of the `files` table in PostgreSQL, read in pages of `page` rows, one transaction each. */
export async function pgNamespaceHash(pg: PostgresBackend, page = 5000): Promise<string> {
  const rows: NamespaceRow[] = [];
  for (;;) {
    const last = rows.at(-1)?.[0];
    // Keyset paging in the database's own order, which is consistent with itself; the hash sorts anew.
    const got = await pg.transact((tx) =>
      last === undefined
        ? tx.all("SELECT path, version, size, sha256, chunks, meta FROM files ORDER BY path LIMIT ?", [page])
        : tx.all("SELECT path, version, size, sha256, chunks, meta FROM files WHERE path > ? ORDER BY path LIMIT ?", [last, page]),
    );
    rows.push(...(got as NamespaceRow[]));
    if (got.length < page) return namespaceHash(rows);
  }
}
