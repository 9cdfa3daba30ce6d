import { createHash } from "node:crypto";
import { DfsError } from "../protocol/errors.js";
import type { Tx } from "./tx.js";

/*
 * The directory's tables in PostgreSQL: the same tables, columns and meanings as the sql.js layout of
 * `src/roles/directory/schema.ts`, in SQL that CockroachDB and YugabyteDB also run (plain tables,
 * B-tree and partial indexes, BIGINT and TEXT only).
 *
 * Two differences from the sql.js layout:
 * - `meta` has typed columns instead of SQLite's untyped `value`: `num` (BIGINT) for counters and
 *   ceilings (`files`, `bytes`, `chunks`, `token`, `gen`, `schema_version`) and `txt` (TEXT) for
 *   names (`cluster`); exactly one of them is set. A counter then stays a number that
 *   `num = num + ?` can change in place, as the sql.js statements do with `value`.
 * - `meta` holds `schema_version`, the layout's version: a later dfs reads it to upgrade the tables,
 *   and this one refuses a database of a version it does not know. Version 2 added `files.meta` (a
 *   version's metadata as JSON text, NULL for none) and the `s3keys` table.
 *
 * Sizes, counters and times (milliseconds since 1970) are BIGINT, as SQLite's INTEGER is 64 bits.
 * `files.chunks` stays the JSON text array of chunk hashes it is in sql.js.
 */

/** The layout these statements make; `meta.schema_version` in the database. */
export const DIRECTORY_SCHEMA_VERSION = 2;

/** Tables in the order they are copied and checked. */
export const DIRECTORY_TABLES = ["files", "chunks", "replicas", "nodes", "leases", "tombstones", "s3keys", "meta"] as const;
export type DirectoryTable = (typeof DIRECTORY_TABLES)[number];

const DDL = [
  `CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, version BIGINT NOT NULL, size BIGINT NOT NULL,
    sha256 TEXT NOT NULL, chunks TEXT NOT NULL, mtime BIGINT NOT NULL, meta TEXT)`,
  // touched: when a placement, upload or dereference last used the chunk; the collector waits its grace from then.
  `CREATE TABLE IF NOT EXISTS chunks(hash TEXT PRIMARY KEY, size BIGINT NOT NULL, refs BIGINT NOT NULL,
    touched BIGINT NOT NULL DEFAULT 0)`,
  `CREATE INDEX IF NOT EXISTS chunks_unreferenced ON chunks(hash) WHERE refs = 0`,
  // mark: which chunk report last confirmed the replica; a live figure the directory rebuilds.
  `CREATE TABLE IF NOT EXISTS replicas(hash TEXT NOT NULL, node TEXT NOT NULL, mark BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY(hash, node))`,
  `CREATE INDEX IF NOT EXISTS replicas_node ON replicas(node)`,
  // free, used, chunks, state, seen: live figures from the node's reports, rebuilt while running.
  `CREATE TABLE IF NOT EXISTS nodes(id TEXT PRIMARY KEY, role TEXT NOT NULL, url TEXT NOT NULL, zone TEXT NOT NULL,
    capacity BIGINT, free BIGINT NOT NULL DEFAULT 0, used BIGINT NOT NULL DEFAULT 0, chunks BIGINT NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'down', seen BIGINT NOT NULL DEFAULT 0, cert TEXT, secret TEXT, link TEXT)`,
  `CREATE TABLE IF NOT EXISTS leases(path TEXT PRIMARY KEY, token BIGINT NOT NULL, owner TEXT NOT NULL,
    session TEXT NOT NULL, expires BIGINT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS tombstones(hash TEXT NOT NULL, node TEXT NOT NULL, gen BIGINT NOT NULL, at BIGINT NOT NULL,
    PRIMARY KEY(hash, node))`,
  `CREATE INDEX IF NOT EXISTS tombstones_at ON tombstones(at)`,
  // The S3 gateway's access keys; buckets is a JSON text array of names, or ["*"].
  `CREATE TABLE IF NOT EXISTS s3keys(id TEXT PRIMARY KEY, secret TEXT NOT NULL, buckets TEXT NOT NULL, created BIGINT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, num BIGINT, txt TEXT,
    CHECK ((num IS NULL AND txt IS NOT NULL) OR (num IS NOT NULL AND txt IS NULL)))`,
  // The tables and sequences below serve directory processes running on the database; `metadata migrate`
  // copies none of them (a stopped embedded directory has nothing to put there).
  // Chunks a node reported that no file or upload names, collected once they stayed so for the grace period.
  `CREATE TABLE IF NOT EXISTS leftovers(hash TEXT NOT NULL, node TEXT NOT NULL, since BIGINT NOT NULL, PRIMARY KEY(hash, node))`,
  // Changes of meta's files/bytes/chunks counters, one row per commit: rows are only added (no two commits
  // contend for a counter row) and folded into meta by the background runner.
  `CREATE TABLE IF NOT EXISTS counts(id TEXT PRIMARY KEY, files BIGINT NOT NULL, bytes BIGINT NOT NULL, chunks BIGINT NOT NULL)`,
  // Which directory process runs background work, until when, and the epoch its orders carry.
  `CREATE TABLE IF NOT EXISTS runner(name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch BIGINT NOT NULL, expires BIGINT NOT NULL)`,
  `CREATE SEQUENCE IF NOT EXISTS lease_tokens`,
  `CREATE SEQUENCE IF NOT EXISTS gens`,
  `CREATE SEQUENCE IF NOT EXISTS report_marks`,
];

/** The columns of each table, in the order rows are copied. */
export const COLUMNS: Record<DirectoryTable, string[]> = {
  files: ["path", "version", "size", "sha256", "chunks", "mtime", "meta"],
  chunks: ["hash", "size", "refs"],
  replicas: ["hash", "node", "mark"],
  nodes: ["id", "role", "url", "zone", "capacity", "free", "used", "chunks", "state", "seen", "cert", "secret"],
  leases: ["path", "token", "owner", "session", "expires"],
  tombstones: ["hash", "node", "gen", "at"],
  s3keys: ["id", "secret", "buckets", "created"],
  meta: ["key", "num", "txt"],
};

/** The columns that make a row unique, to page through a table in a stable order. */
export const KEYS: Record<DirectoryTable, string[]> = {
  files: ["path"],
  chunks: ["hash"],
  replicas: ["hash", "node"],
  nodes: ["id"],
  leases: ["path"],
  tombstones: ["hash", "node"],
  s3keys: ["id"],
  meta: ["key"],
};

/**
 * Makes the directory's tables where they are missing and records the layout's version; idempotent.
 * Fails BAD_REQUEST on a database whose layout is newer than this dfs knows. Run it in a transaction
 * of its own: CockroachDB limits what else a transaction that changes the schema may do.
 */
export async function ensureDirectorySchema(tx: Tx): Promise<void> {
  for (const statement of DDL) {
    // Only what is missing: PostgreSQL answers "already exists, skipping" notices otherwise, on every start.
    const name = /^CREATE (?:TABLE|INDEX|SEQUENCE) IF NOT EXISTS (\w+)/.exec(statement)![1]!;
    if (!(await tableExists(tx, name))) await tx.run(statement);
  }
  await tx.run("INSERT INTO meta(key, num) VALUES('schema_version', ?) ON CONFLICT(key) DO NOTHING", [DIRECTORY_SCHEMA_VERSION]);
  let version = await schemaVersion(tx);
  if (version === 1) {
    // Version 1's files table lacks the metadata column; its missing s3keys table was made above.
    if (!(await columnExists(tx, "files", "meta"))) await tx.run("ALTER TABLE files ADD COLUMN meta TEXT");
    await tx.run("UPDATE meta SET num = ? WHERE key = 'schema_version' AND num = 1", [DIRECTORY_SCHEMA_VERSION]);
    version = await schemaVersion(tx);
  }
  if (version !== DIRECTORY_SCHEMA_VERSION) {
    throw new DfsError("BAD_REQUEST", `the metadata database holds directory tables of layout version ${version}; this dfs knows version ${DIRECTORY_SCHEMA_VERSION} (upgrade dfs)`);
  }
}

/** `meta.schema_version`, or undefined when the tables are not there (or hold no version). */
export async function schemaVersion(tx: Tx): Promise<number | undefined> {
  if (!(await tableExists(tx, "meta"))) return undefined;
  const row = await tx.get("SELECT num FROM meta WHERE key = 'schema_version'");
  return row ? Number(row[0]) : undefined;
}

/** Whether a table (or index) of that name is visible in the session's schema search path. */
export async function tableExists(tx: Tx, table: string): Promise<boolean> {
  return (await tx.get("SELECT to_regclass(?) IS NOT NULL", [table]))?.[0] === 1;
}

/** Whether `table` (in the session's search path) has `column`. */
async function columnExists(tx: Tx, table: string, column: string): Promise<boolean> {
  return (await tx.get(
    "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? AND column_name = ?",
    [table, column],
  )) !== undefined;
}

/** One row of the namespace as the hash sees it: path, version, size, sha256, chunks (the JSON text), meta (the JSON text or null). */
export type NamespaceRow = [path: string, version: number, size: number, sha256: string, chunks: string, meta?: string | null];

/**
 * SHA-256 (hex) over every file's path, version, size, sha256, chunk list and metadata, in the byte
 * order of the paths' UTF-8 (SQLite's order). The rows are sorted here, not by either database:
 * PostgreSQL orders text by the database's collation, which differs between installations. Each row is
 * one JSON array and a newline, so no two namespaces share an input; a version without metadata
 * leaves it out of its array, so that a namespace without any hashes as it did before metadata existed.
 */
export function namespaceHash(rows: Iterable<NamespaceRow>): string {
  const keyed = [...rows].map((r) => ({ key: Buffer.from(r[0], "utf8"), r }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  const h = createHash("sha256");
  for (const { r } of keyed) {
    const line = [r[0], Number(r[1]), Number(r[2]), r[3], r[4]];
    if (r[5] !== undefined && r[5] !== null) line.push(r[5]);
    h.update(JSON.stringify(line) + "\n");
  }
  return h.digest("hex");
}
