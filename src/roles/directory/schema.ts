import type { Database } from "sql.js";
import { DfsError } from "../../protocol/errors.js";
import { encodeFileMeta, type FileMeta } from "../../protocol/file-meta.js";
import type { Schema } from "./checkpoint.js";
import { noSuchFile, targetExists, versionConflict } from "./rules.js";
import { all, get, run } from "./sql.js";

/**
 * Tables of the directory. Journaled records change them, except the live figures that the directory
 * keeps current by itself and rebuilds after a restart: `nodes.state/free/used/chunks/seen` and
 * `replicas.mark` (which chunk report last confirmed a replica).
 */
export const SCHEMA = `
CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, version INTEGER NOT NULL, size INTEGER NOT NULL,
  sha256 TEXT NOT NULL, chunks TEXT NOT NULL, mtime INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(hash TEXT PRIMARY KEY, size INTEGER NOT NULL, refs INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_unreferenced ON chunks(hash) WHERE refs = 0;
CREATE TABLE IF NOT EXISTS replicas(hash TEXT NOT NULL, node TEXT NOT NULL, PRIMARY KEY(hash, node)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replicas_node ON replicas(node);
CREATE TABLE IF NOT EXISTS nodes(id TEXT PRIMARY KEY, role TEXT NOT NULL, url TEXT NOT NULL, zone TEXT NOT NULL,
  capacity INTEGER, free INTEGER NOT NULL DEFAULT 0, used INTEGER NOT NULL DEFAULT 0,
  chunks INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'down', seen INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS leases(path TEXT PRIMARY KEY, token INTEGER NOT NULL, owner TEXT NOT NULL,
  session TEXT NOT NULL, expires INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tombstones(hash TEXT NOT NULL, node TEXT NOT NULL, gen INTEGER NOT NULL, at INTEGER NOT NULL,
  PRIMARY KEY(hash, node)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tombstones_at ON tombstones(at);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS s3keys(id TEXT PRIMARY KEY, secret TEXT NOT NULL, buckets TEXT NOT NULL, created INTEGER NOT NULL);
`;

/** Columns added since the first release: a database made by it gains them when opened. */
const ADDED_COLUMNS: [table: string, column: string, decl: string][] = [
  ["replicas", "mark", "INTEGER NOT NULL DEFAULT 0"],
  ["nodes", "cert", "TEXT"],
  ["nodes", "secret", "TEXT"],
  // A version's metadata as JSON text; NULL for none.
  ["files", "meta", "TEXT"],
];

/**
 * Brings a database of any earlier layout to this one; idempotent, and run on every open. Counters that
 * an older database lacks are computed once from its rows.
 */
export function upgradeSchema(db: Database): void {
  db.exec(SCHEMA);
  for (const [table, column, decl] of ADDED_COLUMNS) {
    const have = all(db, `PRAGMA table_info(${table})`).some((r) => r[1] === column);
    if (!have) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${decl}`);
  }
  if (metaNumber(db, "files") === undefined) {
    const one = (sql: string) => Number(get(db, sql)?.[0] ?? 0);
    setMeta(db, "files", one("SELECT COUNT(*) FROM files"));
    setMeta(db, "bytes", one("SELECT COALESCE(SUM(size), 0) FROM files"));
    setMeta(db, "chunks", one("SELECT COUNT(*) FROM chunks WHERE refs > 0"));
  }
}

export function metaNumber(db: Database, key: string): number | undefined {
  const r = get(db, "SELECT value FROM meta WHERE key=?", [key]);
  return r ? Number(r[0]) : undefined;
}

export function metaText(db: Database, key: string): string | undefined {
  const r = get(db, "SELECT value FROM meta WHERE key=?", [key]);
  return r ? String(r[0]) : undefined;
}

function setMeta(db: Database, key: string, value: number | string): void {
  run(db, "INSERT INTO meta(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", [key, value]);
}

function addMeta(db: Database, key: string, delta: number): void {
  if (delta !== 0) run(db, "UPDATE meta SET value = value + ? WHERE key=?", [delta, key]);
}

export interface CommitFile {
  path: string;
  size: number;
  sha256: string;
  chunks: string[];
  baseVersion?: number;
  /** Absent in records of versions without metadata, and in every record written before it existed. */
  meta?: FileMeta;
}

/**
 * Journal records: every durable change of the directory is one of these, replayed in order at start-up.
 * `gc` and `reconcile` are only replayed from journals written by the first release.
 */
export type DirRecord =
  | { op: "cluster"; id: string }
  | { op: "node"; id: string; role: string; url: string; zone: string; capacity: number | null; cert?: string; secret?: string }
  | { op: "commit"; files: CommitFile[]; mtime: number }
  | { op: "rm"; path: string }
  | { op: "mv"; from: string; to: string }
  | { op: "replicas"; node: string; add: { hash: string; size: number }[] }
  | { op: "unreplicate"; node: string; hashes: string[] }
  | { op: "drop"; gen: number; at: number; chunks: string[]; replicas: { hash: string; node: string }[] }
  | { op: "prune"; before: number }
  | { op: "lease"; path: string; token: number; owner: string; session: string; expires: number }
  | { op: "unlease"; path: string; token: number }
  | { op: "gen"; ceiling: number }
  | { op: "reconcile"; node: string; hashes: string[] }
  | { op: "gc"; hashes: string[] }
  | { op: "s3key"; id: string; secret: string; buckets: string[]; created: number }
  | { op: "s3key-rm"; id: string };

/** Applies one record. Deterministic, and throws a DfsError to refuse it (nothing is journaled then). */
export function applyRecord(db: Database, rec: DirRecord): void {
  switch (rec.op) {
    case "cluster":
      return setMeta(db, "cluster", rec.id);
    case "node":
      run(db,
        `INSERT INTO nodes(id, role, url, zone, capacity, cert, secret) VALUES(?,?,?,?,?,?,?)
         ON CONFLICT(id) DO UPDATE SET role=excluded.role, url=excluded.url, zone=excluded.zone, capacity=excluded.capacity,
         cert=COALESCE(nodes.cert, excluded.cert), secret=COALESCE(nodes.secret, excluded.secret)`,
        [rec.id, rec.role, rec.url, rec.zone, rec.capacity, rec.cert ?? null, rec.secret ?? null],
      );
      return;
    case "commit":
      return applyCommit(db, rec.files, rec.mtime);
    case "rm":
      return applyRemove(db, rec.path);
    case "mv":
      return applyMove(db, rec.from, rec.to);
    case "replicas":
      for (const c of rec.add) {
        run(db, "INSERT INTO chunks(hash, size, refs) VALUES(?,?,0) ON CONFLICT(hash) DO NOTHING", [c.hash, c.size]);
        run(db, "INSERT OR IGNORE INTO replicas(hash, node) VALUES(?,?)", [c.hash, rec.node]);
      }
      return;
    case "unreplicate":
      for (const h of rec.hashes) run(db, "DELETE FROM replicas WHERE hash=? AND node=?", [h, rec.node]);
      return;
    case "drop":
      // Only chunks still unreferenced go: the record was made in the same step that checked it.
      for (const h of rec.chunks) run(db, "DELETE FROM chunks WHERE hash=? AND refs=0", [h]);
      for (const r of rec.replicas) {
        run(db, "DELETE FROM replicas WHERE hash=? AND node=?", [r.hash, r.node]);
        run(db, "INSERT OR REPLACE INTO tombstones(hash, node, gen, at) VALUES(?,?,?,?)", [r.hash, r.node, rec.gen, rec.at]);
      }
      return;
    case "prune":
      run(db, "DELETE FROM tombstones WHERE at < ?", [rec.before]);
      return;
    case "lease":
      run(db, "INSERT OR REPLACE INTO leases(path, token, owner, session, expires) VALUES(?,?,?,?,?)",
        [rec.path, rec.token, rec.owner, rec.session, rec.expires]);
      if (rec.token > (metaNumber(db, "token") ?? 0)) setMeta(db, "token", rec.token);
      return;
    case "unlease":
      run(db, "DELETE FROM leases WHERE path=? AND token=?", [rec.path, rec.token]);
      return;
    case "gen":
      if (rec.ceiling > (metaNumber(db, "gen") ?? 0)) setMeta(db, "gen", rec.ceiling);
      return;
    case "reconcile":
      run(db, "DELETE FROM replicas WHERE node=?", [rec.node]);
      for (const h of rec.hashes) run(db, "INSERT OR IGNORE INTO replicas(hash, node) SELECT hash, ? FROM chunks WHERE hash=?", [rec.node, h]);
      return;
    case "gc":
      for (const h of rec.hashes) {
        run(db, "DELETE FROM chunks WHERE hash=? AND refs=0", [h]);
        run(db, "DELETE FROM replicas WHERE hash=? AND NOT EXISTS (SELECT 1 FROM chunks WHERE hash=?)", [h, h]);
      }
      return;
    case "s3key":
      if (get(db, "SELECT 1 FROM s3keys WHERE id=?", [rec.id])) throw new DfsError("EXISTS", `S3 access key ${rec.id} exists already`);
      run(db, "INSERT INTO s3keys(id, secret, buckets, created) VALUES(?,?,?,?)", [rec.id, rec.secret, JSON.stringify(rec.buckets), rec.created]);
      return;
    case "s3key-rm":
      if (!get(db, "SELECT 1 FROM s3keys WHERE id=?", [rec.id])) throw new DfsError("NOT_FOUND", `no S3 access key ${rec.id}`);
      run(db, "DELETE FROM s3keys WHERE id=?", [rec.id]);
      return;
  }
}

function applyCommit(db: Database, files: CommitFile[], mtime: number): void {
  let newFiles = 0;
  let bytes = 0;
  let live = 0;
  for (const f of files) {
    const current = get(db, "SELECT version, chunks, size FROM files WHERE path=?", [f.path]);
    const version = current ? Number(current[0]) : 0;
    if (f.baseVersion !== undefined && f.baseVersion !== version) {
      throw versionConflict(f.path, f.baseVersion, version);
    }
    for (const h of new Set(f.chunks)) {
      if (get(db, "SELECT 1 FROM chunks WHERE hash=?", [h]) === undefined) throw new DfsError("CONFLICT", `chunk ${h.slice(0, 12)} of ${f.path} is not stored`);
    }
    if (current) live += adjustRefs(db, JSON.parse(String(current[1])) as string[], -1);
    live += adjustRefs(db, f.chunks, +1);
    if (!current) newFiles++;
    bytes += f.size - (current ? Number(current[2]) : 0);
    run(db,
      `INSERT INTO files(path, version, size, sha256, chunks, mtime, meta) VALUES(?,?,?,?,?,?,?)
       ON CONFLICT(path) DO UPDATE SET version=excluded.version, size=excluded.size, sha256=excluded.sha256,
       chunks=excluded.chunks, mtime=excluded.mtime, meta=excluded.meta`,
      [f.path, version + 1, f.size, f.sha256, JSON.stringify(f.chunks), mtime, encodeFileMeta(f.meta)],
    );
  }
  addMeta(db, "files", newFiles);
  addMeta(db, "bytes", bytes);
  addMeta(db, "chunks", live);
}

function applyRemove(db: Database, path: string): void {
  const found = get(db, "SELECT chunks, size FROM files WHERE path=?", [path]);
  if (!found) throw noSuchFile(path);
  addMeta(db, "chunks", adjustRefs(db, JSON.parse(String(found[0])) as string[], -1));
  addMeta(db, "files", -1);
  addMeta(db, "bytes", -Number(found[1]));
  run(db, "DELETE FROM files WHERE path=?", [path]);
}

function applyMove(db: Database, from: string, to: string): void {
  if (from === to) return;
  if (get(db, "SELECT version FROM files WHERE path=?", [from]) === undefined) throw noSuchFile(from);
  if (get(db, "SELECT version FROM files WHERE path=?", [to]) !== undefined) throw targetExists(to);
  // The new name continues the old name's versions so that cached copies stay valid.
  run(db, "UPDATE files SET path=? WHERE path=?", [to, from]);
}

/** Counts chunk references up or down; returns how the count of referenced chunks changed. */
function adjustRefs(db: Database, hashes: string[], delta: number): number {
  let live = 0;
  for (const h of hashes) {
    const before = get(db, "SELECT refs FROM chunks WHERE hash=?", [h]);
    if (!before) continue;
    const refs = Number(before[0]);
    const after = Math.max(0, refs + delta);
    if (after === refs) continue;
    run(db, "UPDATE chunks SET refs=? WHERE hash=?", [after, h]);
    if (refs === 0 && after > 0) live++;
    else if (refs > 0 && after === 0) live--;
  }
  return live;
}

/** The directory's records and tables, as the store, the checkpointer and recovery apply them. */
export const DIRECTORY_SCHEMA: Schema<DirRecord> = { schema: SCHEMA, upgrade: upgradeSchema, apply: applyRecord };
