import type { Database } from "sql.js";
import { DfsError } from "../../protocol/errors.js";
import { get, run } from "./sql.js";

/** Tables of the directory. `nodes.state/free/used/chunks/seen` are live figures, never journaled. */
export const SCHEMA = `
CREATE TABLE files(path TEXT PRIMARY KEY, version INTEGER NOT NULL, size INTEGER NOT NULL,
  sha256 TEXT NOT NULL, chunks TEXT NOT NULL, mtime INTEGER NOT NULL);
CREATE TABLE chunks(hash TEXT PRIMARY KEY, size INTEGER NOT NULL, refs INTEGER NOT NULL);
CREATE TABLE replicas(hash TEXT NOT NULL, node TEXT NOT NULL, PRIMARY KEY(hash, node)) WITHOUT ROWID;
CREATE INDEX replicas_node ON replicas(node);
CREATE TABLE nodes(id TEXT PRIMARY KEY, role TEXT NOT NULL, url TEXT NOT NULL, zone TEXT NOT NULL,
  capacity INTEGER, free INTEGER NOT NULL DEFAULT 0, used INTEGER NOT NULL DEFAULT 0,
  chunks INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'down', seen INTEGER NOT NULL DEFAULT 0);
CREATE TABLE fences(path TEXT PRIMARY KEY, token INTEGER NOT NULL);
`;

export interface CommitFile {
  path: string;
  size: number;
  sha256: string;
  chunks: string[];
  token: number;
  baseVersion?: number;
}

/** Journal records: every durable change of the directory is one of these, replayed in order at start-up. */
export type DirRecord =
  | { op: "node"; id: string; role: string; url: string; zone: string; capacity: number | null }
  | { op: "commit"; files: CommitFile[]; mtime: number }
  | { op: "rm"; path: string; token?: number }
  | { op: "mv"; from: string; to: string; token?: number }
  | { op: "replicas"; node: string; add: { hash: string; size: number }[] }
  | { op: "unreplicate"; node: string; hashes: string[] }
  | { op: "reconcile"; node: string; hashes: string[] }
  | { op: "gc"; hashes: string[] };

/** Applies one record. Deterministic, and throws a DfsError to refuse it (nothing is journaled then). */
export function applyRecord(db: Database, rec: DirRecord): void {
  switch (rec.op) {
    case "node":
      run(db,
        `INSERT INTO nodes(id, role, url, zone, capacity) VALUES(?,?,?,?,?)
         ON CONFLICT(id) DO UPDATE SET role=excluded.role, url=excluded.url, zone=excluded.zone, capacity=excluded.capacity`,
        [rec.id, rec.role, rec.url, rec.zone, rec.capacity],
      );
      return;
    case "commit":
      return applyCommit(db, rec.files, rec.mtime);
    case "rm":
      return applyRemove(db, rec.path, rec.token);
    case "mv":
      return applyMove(db, rec.from, rec.to, rec.token);
    case "replicas": {
      for (const c of rec.add) {
        run(db, "INSERT INTO chunks(hash, size, refs) VALUES(?,?,0) ON CONFLICT(hash) DO NOTHING", [c.hash, c.size]);
        run(db, "INSERT OR IGNORE INTO replicas(hash, node) VALUES(?,?)", [c.hash, rec.node]);
      }
      return;
    }
    case "unreplicate": {
      for (const h of rec.hashes) run(db, "DELETE FROM replicas WHERE hash=? AND node=?", [h, rec.node]);
      return;
    }
    case "gc": {
      // Only chunks still unreferenced go: a commit may have claimed one since the sweep chose it.
      for (const h of rec.hashes) {
        run(db, "DELETE FROM chunks WHERE hash=? AND refs=0", [h]);
        run(db, "DELETE FROM replicas WHERE hash=? AND NOT EXISTS (SELECT 1 FROM chunks WHERE hash=?)", [h, h]);
      }
      return;
    }
    case "reconcile": {
      run(db, "DELETE FROM replicas WHERE node=?", [rec.node]);
      // Only chunks the directory knows (committed or announced) are tracked; the rest are orphans on that node.
      for (const h of rec.hashes) run(db, "INSERT OR IGNORE INTO replicas(hash, node) SELECT hash, ? FROM chunks WHERE hash=?", [rec.node, h]);
      return;
    }
  }
}

function checkFence(db: Database, path: string, token: number | undefined): void {
  if (token === undefined) return;
  const seen = get(db, "SELECT token FROM fences WHERE path=?", [path])?.[0] as number | undefined;
  if (seen !== undefined && token < seen) {
    throw new DfsError("STALE_TOKEN", `write to ${path} carries lock token ${token}, but token ${seen} was already used; the lock was lost`, {
      details: { path, token, seen },
    });
  }
  if (seen === token) return;
  run(db, "INSERT INTO fences(path, token) VALUES(?,?) ON CONFLICT(path) DO UPDATE SET token=excluded.token", [path, token]);
}

function applyCommit(db: Database, files: CommitFile[], mtime: number): void {
  for (const f of files) {
    checkFence(db, f.path, f.token);
    const current = get(db, "SELECT version, chunks FROM files WHERE path=?", [f.path]);
    const version = current ? Number(current[0]) : 0;
    if (f.baseVersion !== undefined && f.baseVersion !== version) {
      throw new DfsError("CONFLICT", `${f.path} changed since version ${f.baseVersion} (now ${version}); nothing was committed`, {
        details: { path: f.path, baseVersion: f.baseVersion, version },
      });
    }
    for (const h of f.chunks) {
      if (get(db, "SELECT refs FROM chunks WHERE hash=?", [h]) === undefined) {
        throw new DfsError("CONFLICT", `chunk ${h.slice(0, 12)} of ${f.path} was never stored`);
      }
    }
    if (current) adjustRefs(db, JSON.parse(String(current[1])) as string[], -1);
    adjustRefs(db, f.chunks, +1);
    run(db,
      `INSERT INTO files(path, version, size, sha256, chunks, mtime) VALUES(?,?,?,?,?,?)
       ON CONFLICT(path) DO UPDATE SET version=excluded.version, size=excluded.size, sha256=excluded.sha256,
       chunks=excluded.chunks, mtime=excluded.mtime`,
      [f.path, version + 1, f.size, f.sha256, JSON.stringify(f.chunks), mtime],
    );
  }
}

function applyRemove(db: Database, path: string, token?: number): void {
  const found = get(db, "SELECT chunks FROM files WHERE path=?", [path]);
  if (!found) throw new DfsError("NOT_FOUND", `no such file: ${path}`);
  checkFence(db, path, token);
  adjustRefs(db, JSON.parse(String(found[0])) as string[], -1);
  run(db, "DELETE FROM files WHERE path=?", [path]);
}

function applyMove(db: Database, from: string, to: string, token?: number): void {
  if (from === to) return;
  if (get(db, "SELECT version FROM files WHERE path=?", [from]) === undefined) throw new DfsError("NOT_FOUND", `no such file: ${from}`);
  if (get(db, "SELECT version FROM files WHERE path=?", [to]) !== undefined) {
    throw new DfsError("EXISTS", `${to} already exists; remove it first`);
  }
  checkFence(db, from, token);
  // The new name continues the old name's versions so that cached copies stay valid.
  run(db, "UPDATE files SET path=? WHERE path=?", [to, from]);
}

function adjustRefs(db: Database, hashes: string[], delta: number): void {
  for (const h of hashes) run(db, "UPDATE chunks SET refs = MAX(0, refs + ?) WHERE hash=?", [delta, h]);
}
