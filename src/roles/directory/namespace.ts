import type { Database } from "sql.js";
import type { FileInfo, ListEntry } from "../../protocol/directory.js";
import { DfsError } from "../../protocol/errors.js";
import { decodeFileMeta } from "../../protocol/file-meta.js";
import type { ListOptions } from "./core.js";
import type { NodeTable } from "./nodes.js";
import { LAST_CHAR } from "./rules.js";
import { metaNumber } from "./schema.js";
import { all, get } from "./sql.js";

/** Read-side queries of the namespace; every change goes through a journal record instead. */
export class Namespace {
  constructor(
    private readonly db: Database,
    private readonly nodes: NodeTable,
  ) {}

  lookup(path: string): FileInfo {
    const r = get(this.db, "SELECT version, size, sha256, chunks, mtime, meta FROM files WHERE path=?", [path]);
    if (!r) throw new DfsError("NOT_FOUND", `no such file: ${path}`);
    const [version, size, sha256, chunks, mtime, meta] = r;
    const hashes = JSON.parse(String(chunks)) as string[];
    return {
      path,
      version: Number(version),
      size: Number(size),
      sha256: String(sha256),
      mtime: Number(mtime),
      chunks: hashes.map((hash) => ({ hash, size: this.sizeOf(hash), replicas: this.nodes.liveReplicas(hash) })),
      ...decodeFileMeta(meta),
    };
  }

  version(path: string): number {
    const r = get(this.db, "SELECT version FROM files WHERE path=?", [path]);
    return r ? Number(r[0]) : 0;
  }

  list(prefix: string, limit: number, { after = "", withMeta = false }: ListOptions = {}): ListEntry[] {
    const p = prefix.startsWith("/") ? prefix : "/" + prefix;
    // Range scan on the primary key instead of LIKE, which would treat % and _ in names as wildcards.
    const rows = all(this.db, `SELECT path, size, version, mtime${withMeta ? ", meta" : ""} FROM files WHERE path >= ? AND path < ? AND path > ? ORDER BY path LIMIT ?`, [
      p, p + LAST_CHAR, after, limit,
    ]);
    return rows.map(([path, size, version, mtime, meta]) => ({
      path: String(path), size: Number(size), version: Number(version), mtime: Number(mtime), ...decodeFileMeta(meta),
    }));
  }

  /** Files, bytes and referenced chunks, from counters the journal records keep (no scan). */
  totals(): { files: number; chunks: number; bytes: number } {
    return {
      files: metaNumber(this.db, "files") ?? 0,
      bytes: metaNumber(this.db, "bytes") ?? 0,
      chunks: metaNumber(this.db, "chunks") ?? 0,
    };
  }

  /**
   * The next `limit` referenced chunks after `cursor` in hash order, with their copies on live nodes (`up`) and
   * on nodes not yet declared down (`present`: a node that only lost its link may come back).
   */
  replicaPage(cursor: string, limit: number): { hash: string; size: number; up: number; present: number }[] {
    const rows = all(
      this.db,
      `SELECT c.hash, c.size,
         (SELECT COUNT(*) FROM replicas r JOIN nodes n ON n.id=r.node WHERE r.hash=c.hash AND n.state='up'),
         (SELECT COUNT(*) FROM replicas r JOIN nodes n ON n.id=r.node WHERE r.hash=c.hash AND n.state!='down')
       FROM chunks c WHERE c.hash > ? AND c.refs > 0 ORDER BY c.hash LIMIT ?`,
      [cursor, limit],
    );
    return rows.map(([hash, size, up, present]) => ({ hash: String(hash), size: Number(size), up: Number(up), present: Number(present) }));
  }

  sizeOf(hash: string): number {
    const r = get(this.db, "SELECT size FROM chunks WHERE hash=?", [hash]);
    return r ? Number(r[0]) : 0;
  }
}
