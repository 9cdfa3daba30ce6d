import { randomUUID } from "node:crypto";
import type {
  CommitBody, CommitReply, FileInfo, ListEntry, PlaceBody, PlaceReply, Replica, StoredBody, StoredReply,
} from "../../../protocol/directory.js";
import { DfsError } from "../../../protocol/errors.js";
import { decodeFileMeta, encodeFileMeta } from "../../../protocol/file-meta.js";
import type { PostgresBackend } from "../../../metadata/postgres.js";
import type { Tx } from "../../../metadata/tx.js";
import type { Peer } from "../../../transport/actor.js";
import { notEnoughNodes, pickTargets } from "../placement.js";
import { chunksGone, LAST_CHAR, noSuchFile, targetExists, tooFewCopies, versionConflict } from "../rules.js";
import { fence, type Lease } from "../leases.js";
import type { ListOptions } from "../core.js";
import type { PgLeases } from "./leases.js";
import { NOW_MS, type PgNodes } from "./nodes.js";
import { allIn, marks, slices } from "./sql.js";

const READ = { readOnly: true } as const;

/** Counts references up or down in `refs` (clamped at 0); returns how the number of referenced chunks changed. */
function count(refs: Map<string, number>, hashes: string[], delta: 1 | -1): number {
  let live = 0;
  for (const h of hashes) {
    const n = refs.get(h);
    if (n === undefined) continue;
    const after = Math.max(0, n + delta);
    if (after === n) continue;
    refs.set(h, after);
    if (n === 0 && after > 0) live++;
    else if (n > 0 && after === 0) live--;
  }
  return live;
}

/**
 * The namespace in PostgreSQL: every mutation is one serializable transaction that checks its leases, its
 * chunks and their copies, and changes the rows; the answer goes out once COMMIT returned.
 */
export class PgFiles {
  constructor(
    private readonly db: PostgresBackend,
    private readonly nodes: PgNodes,
    private readonly leases: PgLeases,
    private readonly init: { replicas: number; minReplicas: number },
  ) {}

  place(b: PlaceBody): Promise<PlaceReply> {
    return this.db.transact(async (tx) => {
      const up = await this.nodes.upStorage(tx);
      const hashes = b.chunks.map((c) => c.hash);
      const live = await this.nodes.liveReplicas(tx, hashes);
      let reconnecting: number | undefined;
      const chunks = [];
      for (const { hash, size } of b.chunks) {
        const existing = live.get(hash)!.map((r) => r.node);
        const want = this.init.replicas - existing.length;
        if (want <= 0) {
          chunks.push({ hash, targets: [] });
          continue;
        }
        const targets = pickTargets(up, size, want, { existing, exclude: b.exclude });
        if (existing.length + targets.length < this.init.minReplicas) {
          const withRoom = up.filter((n) => !b.exclude.includes(n.id) && n.free >= size).length;
          reconnecting ??= await this.nodes.reconnecting(tx);
          throw notEnoughNodes(withRoom, this.init.minReplicas, reconnecting);
        }
        chunks.push({ hash, targets });
      }
      await this.touch(tx, hashes);
      const gen = Number((await tx.get("SELECT nextval('gens')"))![0]);
      return { chunks, gen };
    });
  }

  /** A storage node stored chunks: record the replicas, unless a delete was ordered after their placement. */
  async stored(b: StoredBody, peer: Peer): Promise<StoredReply> {
    const node = this.nodes.idOf(peer);
    if (!node) throw new DfsError("BAD_REQUEST", "chunk report before registration");
    this.nodes.heard(peer);
    return this.db.transact(async (tx) => {
      const tombs = new Map((await allIn(tx, "SELECT hash, gen FROM tombstones WHERE node=? AND hash IN (*)", b.chunks.map((c) => c.hash), [node]))
        .map(([h, gen]) => [String(h), Number(gen)]));
      const refused: string[] = [];
      const add = new Map<string, number>();
      for (const ch of b.chunks) {
        const tomb = tombs.get(ch.hash);
        if (tomb !== undefined && tomb > ch.gen) refused.push(ch.hash);
        else add.set(ch.hash, ch.size);
      }
      for (const part of slices([...add], 1000)) {
        await tx.run(
          `INSERT INTO chunks(hash, size, refs, touched) VALUES ${part.map(() => `(?,?,0,${NOW_MS})`).join(",")}
           ON CONFLICT(hash) DO UPDATE SET touched=excluded.touched`,
          part.flat(),
        );
        await tx.run(
          `INSERT INTO replicas(hash, node, mark) VALUES ${part.map(() => "(?,?,0)").join(",")} ON CONFLICT(hash, node) DO NOTHING`,
          part.flatMap(([h]) => [h, node]),
        );
      }
      return { refused };
    });
  }

  /** Set-based, so that a commit of a thousand files is a handful of statements, not thousands. */
  commit(b: CommitBody): Promise<CommitReply> {
    return this.db.transact(async (tx) => {
      const paths = b.files.map((f) => f.path);
      const held = new Map<string, Lease>();
      for (const r of await allIn(tx, `SELECT path, token, owner, session, expires FROM leases WHERE expires > ${NOW_MS} AND path IN (*)`, paths)) {
        held.set(String(r[0]), { token: Number(r[1]), owner: String(r[2]), session: String(r[3]), expires: Number(r[4]) });
      }
      for (const f of b.files) fence(f.path, held.get(f.path), { token: f.token, session: b.session });
      const named = [...new Set(b.files.flatMap((f) => f.chunks))];
      const refs = await this.refsOf(tx, named);
      const live = named.length ? await this.nodes.liveReplicas(tx, named) : new Map<string, Replica[]>();
      for (const f of b.files) {
        const missing = [...new Set(f.chunks)].filter((h) => !refs.has(h));
        if (missing.length > 0) throw chunksGone(f.path, missing);
        for (const h of new Set(f.chunks)) {
          const have = live.get(h)!.length;
          if (have < this.init.minReplicas) throw tooFewCopies(f.path, h, have, this.init.minReplicas);
        }
      }
      const current = new Map<string, { version: number; chunks: string[]; size: number }>();
      for (const r of await allIn(tx, "SELECT path, version, chunks, size FROM files WHERE path IN (*)", paths)) {
        current.set(String(r[0]), { version: Number(r[1]), chunks: JSON.parse(String(r[2])) as string[], size: Number(r[3]) });
      }
      // Old chunk lists may name chunks this commit does not: their counts are needed too.
      await this.refsOf(tx, [...current.values()].flatMap((c) => c.chunks).filter((h) => !refs.has(h)), refs);
      const before = new Map(refs);
      const now = Number((await tx.get(`SELECT ${NOW_MS}`))![0]);
      const totals = { files: 0, bytes: 0, chunks: 0 };
      const rows = new Map<string, [string, number, number, string, string, number, string | null]>();
      const versions = [];
      // File by file, as the embedded store applies them: a path named twice sees its first change.
      for (const f of b.files) {
        const cur = current.get(f.path);
        const version = cur?.version ?? 0;
        if (f.baseVersion !== undefined && f.baseVersion !== version) throw versionConflict(f.path, f.baseVersion, version);
        if (cur) totals.chunks += count(refs, cur.chunks, -1);
        totals.chunks += count(refs, f.chunks, +1);
        if (!cur) totals.files++;
        totals.bytes += f.size - (cur?.size ?? 0);
        current.set(f.path, { version: version + 1, chunks: f.chunks, size: f.size });
        rows.set(f.path, [f.path, version + 1, f.size, f.sha256, JSON.stringify(f.chunks), now, encodeFileMeta(f.meta)]);
        versions.push({ path: f.path, version: version + 1 });
      }
      await this.writeRefs(tx, refs, before);
      for (const part of slices([...rows.values()], 1000)) {
        await tx.run(
          `INSERT INTO files(path, version, size, sha256, chunks, mtime, meta) VALUES ${part.map(() => "(?,?,?,?,?,?,?)").join(",")}
           ON CONFLICT(path) DO UPDATE SET version=excluded.version, size=excluded.size, sha256=excluded.sha256,
           chunks=excluded.chunks, mtime=excluded.mtime, meta=excluded.meta`,
          part.flat(),
        );
      }
      await this.count(tx, totals);
      return { versions };
    });
  }

  remove(b: { path: string; token?: number; session?: string }): Promise<void> {
    return this.db.transact(async (tx) => {
      await this.leases.check(tx, b.path, b);
      const found = await tx.get("SELECT chunks, size FROM files WHERE path=?", [b.path]);
      if (!found) throw noSuchFile(b.path);
      const hashes = JSON.parse(String(found[0])) as string[];
      const refs = await this.refsOf(tx, hashes);
      const before = new Map(refs);
      const chunks = count(refs, hashes, -1);
      await this.writeRefs(tx, refs, before);
      await tx.run("DELETE FROM files WHERE path=?", [b.path]);
      await this.count(tx, { files: -1, bytes: -Number(found[1]), chunks });
    });
  }

  move(b: { from: string; to: string; fromToken?: number; toToken?: number; session?: string }): Promise<void> {
    return this.db.transact(async (tx) => {
      await this.leases.check(tx, b.from, { token: b.fromToken, session: b.session });
      await this.leases.check(tx, b.to, { token: b.toToken, session: b.session });
      if (b.from === b.to) return;
      if (!(await tx.get("SELECT 1 FROM files WHERE path=?", [b.from]))) throw noSuchFile(b.from);
      if (await tx.get("SELECT 1 FROM files WHERE path=?", [b.to])) throw targetExists(b.to);
      // The new name continues the old name's versions so that cached copies stay valid.
      await tx.run("UPDATE files SET path=? WHERE path=?", [b.to, b.from]);
    });
  }

  lookup(path: string): Promise<FileInfo> {
    return this.db.transact(async (tx) => {
      const r = await tx.get("SELECT version, size, sha256, chunks, mtime, meta FROM files WHERE path=?", [path]);
      if (!r) throw noSuchFile(path);
      const hashes = JSON.parse(String(r[3])) as string[];
      const sizes = new Map((await allIn(tx, "SELECT hash, size FROM chunks WHERE hash IN (*)", hashes)).map(([h, size]) => [String(h), Number(size)]));
      const live = await this.nodes.liveReplicas(tx, hashes);
      return {
        path, version: Number(r[0]), size: Number(r[1]), sha256: String(r[2]), mtime: Number(r[4]),
        chunks: hashes.map((hash): { hash: string; size: number; replicas: Replica[] } => ({ hash, size: sizes.get(hash) ?? 0, replicas: live.get(hash)! })),
        ...decodeFileMeta(r[5]),
      };
    }, READ);
  }

  list(prefix: string, limit: number, { after = "", withMeta = false }: ListOptions = {}): Promise<ListEntry[]> {
    const p = prefix.startsWith("/") ? prefix : "/" + prefix;
    return this.db.transact(async (tx) => {
      // Byte order (COLLATE "C"), as the embedded store lists: the database's own collation varies by installation.
      const rows = await tx.all(
        `SELECT path, size, version, mtime${withMeta ? ", meta" : ""} FROM files WHERE path COLLATE "C" >= ? AND path COLLATE "C" < ? AND path COLLATE "C" > ? ORDER BY path COLLATE "C" LIMIT ?`,
        [p, p + LAST_CHAR, after, limit],
      );
      return rows.map(([path, size, version, mtime, meta]) => ({
        path: String(path), size: Number(size), version: Number(version), mtime: Number(mtime), ...decodeFileMeta(meta),
      }));
    }, READ);
  }

  /** Files, bytes and referenced chunks: meta's counters plus the changes not yet folded into them. */
  async totals(tx: Tx): Promise<{ files: number; chunks: number; bytes: number }> {
    const m = new Map((await tx.all("SELECT key, num FROM meta WHERE key IN ('files', 'bytes', 'chunks')")).map(([k, n]) => [String(k), Number(n)]));
    const d = (await tx.get("SELECT COALESCE(SUM(files), 0), COALESCE(SUM(bytes), 0), COALESCE(SUM(chunks), 0) FROM counts"))!;
    return { files: (m.get("files") ?? 0) + Number(d[0]), bytes: (m.get("bytes") ?? 0) + Number(d[1]), chunks: (m.get("chunks") ?? 0) + Number(d[2]) };
  }

  private async count(tx: Tx, delta: { files: number; bytes: number; chunks: number }): Promise<void> {
    if (delta.files === 0 && delta.bytes === 0 && delta.chunks === 0) return;
    await tx.run("INSERT INTO counts(id, files, bytes, chunks) VALUES(?,?,?,?)", [randomUUID(), delta.files, delta.bytes, delta.chunks]);
  }

  /** Placed or stored chunks start their grace period again. */
  private async touch(tx: Tx, hashes: string[]): Promise<void> {
    for (const part of slices([...new Set(hashes)])) await tx.run(`UPDATE chunks SET touched=${NOW_MS} WHERE hash IN (${marks(part.length)})`, part);
  }

  /** The reference counts of the chunks among `hashes` that exist, added to `into`. */
  private async refsOf(tx: Tx, hashes: string[], into = new Map<string, number>()): Promise<Map<string, number>> {
    for (const [h, n] of await allIn(tx, "SELECT hash, refs FROM chunks WHERE hash IN (*)", hashes)) into.set(String(h), Number(n));
    return into;
  }

  /** Writes the counts that differ from `before`, in a few statements; a chunk nothing references any more gets its grace period from now. */
  private async writeRefs(tx: Tx, refs: Map<string, number>, before: Map<string, number>): Promise<void> {
    for (const part of slices([...refs].filter(([h, n]) => before.get(h) !== n))) {
      await tx.run(
        `UPDATE chunks SET refs = v.refs, touched = CASE WHEN v.refs = 0 THEN ${NOW_MS} ELSE chunks.touched END
         FROM (VALUES ${part.map(() => "(?::text, ?::bigint)").join(",")}) AS v(hash, refs) WHERE chunks.hash = v.hash`,
        part.flat(),
      );
    }
  }
}
