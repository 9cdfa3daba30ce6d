import type { Database } from "sql.js";
import type { FileInfo, ListEntry } from "../../protocol/directory.js";
import { DfsError } from "../../protocol/errors.js";
import type { NodeTable } from "./nodes.js";
import { all, get } from "./sql.js";

/** Read-side queries of the namespace; every change goes through a journal record instead. */
export class Namespace {
  constructor(
    private readonly db: Database,
    private readonly nodes: NodeTable,
  ) {}

  lookup(path: string): FileInfo {
    const r = get(this.db, "SELECT version, size, sha256, chunks, mtime FROM files WHERE path=?", [path]);
    if (!r) throw new DfsError("NOT_FOUND", `no such file: ${path}`);
    const [version, size, sha256, chunks, mtime] = r;
    const hashes = JSON.parse(String(chunks)) as string[];
    return {
      path,
      version: Number(version),
      size: Number(size),
      sha256: String(sha256),
      mtime: Number(mtime),
      chunks: hashes.map((hash) => ({ hash, size: this.sizeOf(hash), replicas: this.nodes.liveReplicas(hash) })),
    };
  }

  version(path: string): number {
    const r = get(this.db, "SELECT version FROM files WHERE path=?", [path]);
    return r ? Number(r[0]) : 0;
  }

  list(prefix: string, limit: number): ListEntry[] {
    const p = prefix.startsWith("/") ? prefix : "/" + prefix;
    // Range scan on the primary key instead of LIKE, which would treat % and _ in names as wildcards.
    const rows = all(this.db, "SELECT path, size, version, mtime FROM files WHERE path >= ? AND path < ? ORDER BY path LIMIT ?", [
      p, p + "\uffff", limit,
    ]);
    return rows.map(([path, size, version, mtime]) => ({
      path: String(path), size: Number(size), version: Number(version), mtime: Number(mtime),
    }));
  }

  /** Live replicas of each chunk, for the commit check. */
  liveCount(hash: string): number {
    return this.nodes.liveReplicas(hash).length;
  }

  totals(replicas: number): { files: number; chunks: number; bytes: number; underReplicated: number } {
    const one = (sql: string, params: number[] = []) => Number(get(this.db, sql, params)?.[0] ?? 0);
    return {
      files: one("SELECT COUNT(*) FROM files"),
      bytes: one("SELECT COALESCE(SUM(size), 0) FROM files"),
      chunks: one("SELECT COUNT(*) FROM chunks WHERE refs > 0"),
      underReplicated: one(
        `SELECT COUNT(*) FROM chunks c WHERE c.refs > 0 AND
         (SELECT COUNT(*) FROM replicas r JOIN nodes n ON n.id=r.node WHERE r.hash=c.hash AND n.state='up') < ?`,
        [replicas],
      ),
    };
  }

  /**
   * Referenced chunks with fewer than `replicas` copies on nodes not yet declared down (repair's work list):
   * a node that only lost its link may come back, so its copies still count until --dead-after.
   */
  underReplicatedAll(replicas: number, limit = 10_000): { hash: string; size: number; present: number }[] {
    const rows = all(
      this.db,
      `SELECT hash, size, present FROM (SELECT c.hash, c.size,
       (SELECT COUNT(*) FROM replicas r JOIN nodes n ON n.id=r.node WHERE r.hash=c.hash AND n.state!='down') AS present
       FROM chunks c WHERE c.refs > 0) WHERE present < ? LIMIT ?`,
      [replicas, limit],
    );
    return rows.map(([hash, size, present]) => ({ hash: String(hash), size: Number(size), present: Number(present) }));
  }

  sizeOf(hash: string): number {
    const r = get(this.db, "SELECT size FROM chunks WHERE hash=?", [hash]);
    return r ? Number(r[0]) : 0;
  }
}
