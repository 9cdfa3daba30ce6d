import type { CommitBody, CommitReply, PlaceBody, PlaceReply, StoredBody, StoredReply } from "../../protocol/directory.js";
import { DfsError } from "../../protocol/errors.js";
import type { Peer } from "../../transport/actor.js";
import type { Collector } from "./gc.js";
import type { Generations } from "./gens.js";
import type { Leases } from "./leases.js";
import type { Namespace } from "./namespace.js";
import type { NodeTable } from "./nodes.js";
import { notEnoughNodes, pickTargets } from "./placement.js";
import { chunksGone, tooFewCopies } from "./rules.js";
import type { DirRecord } from "./schema.js";
import { get } from "./sql.js";
import type { Database } from "sql.js";

export interface FileComponents {
  db: Database;
  commit: (rec: DirRecord) => { durable: Promise<void> };
  nodes: NodeTable;
  ns: Namespace;
  gens: Generations;
  leases: Leases;
  collector: Collector;
}

/** The write path of the namespace: placement, chunk reports, and the mutations, each fenced by leases. */
export class FileService {
  constructor(private readonly c: FileComponents, private readonly init: { replicas: number; minReplicas: number }) {}

  place(b: PlaceBody): Promise<PlaceReply> {
    const { nodes, gens, collector } = this.c;
    const up = nodes.upStorage();
    collector.touch(b.chunks.map((c) => c.hash));
    const chunks = b.chunks.map(({ hash, size }) => {
      const existing = nodes.liveReplicas(hash).map((r) => r.node);
      const want = this.init.replicas - existing.length;
      if (want <= 0) return { hash, targets: [] };
      const targets = pickTargets(up, size, want, { existing, exclude: b.exclude });
      if (existing.length + targets.length < this.init.minReplicas) {
        const withRoom = up.filter((n) => !b.exclude.includes(n.id) && n.free >= size).length;
        throw notEnoughNodes(withRoom, this.init.minReplicas, nodes.reconnecting());
      }
      return { hash, targets };
    });
    const gen = gens.take();
    return gens.whenDurable().then(() => ({ chunks, gen }));
  }

  /** A storage node stored chunks: record the replicas, unless a delete was ordered after their placement. */
  stored(b: StoredBody, peer: Peer): StoredReply {
    const { db, nodes, collector } = this.c;
    const node = nodes.idOf(peer);
    if (!node) throw new DfsError("BAD_REQUEST", "chunk report before registration");
    const add: { hash: string; size: number }[] = [];
    const refused: string[] = [];
    for (const ch of b.chunks) {
      const tomb = get(db, "SELECT gen FROM tombstones WHERE hash=? AND node=?", [ch.hash, node]);
      if (tomb && Number(tomb[0]) > ch.gen) refused.push(ch.hash);
      else add.push({ hash: ch.hash, size: ch.size });
    }
    if (add.length) {
      // No need to wait for the disk: a commit naming these chunks is journaled after this record, so
      // once the commit is durable this is too; and a node re-reports all its chunks when it reconnects.
      this.c.commit({ op: "replicas", node, add });
      nodes.bump(node, add);
      collector.touch(add.map((a) => a.hash));
    }
    return { refused };
  }

  commit(b: CommitBody): Promise<CommitReply> {
    const { leases, nodes } = this.c;
    const now = Date.now();
    for (const f of b.files) leases.check(f.path, { token: f.token, session: b.session }, now);
    for (const f of b.files) {
      const missing = [...new Set(f.chunks)].filter((h) => get(this.c.db, "SELECT 1 FROM chunks WHERE hash=?", [h]) === undefined);
      if (missing.length > 0) {
        throw chunksGone(f.path, missing);
      }
      for (const h of new Set(f.chunks)) {
        const have = nodes.liveReplicas(h).length;
        if (have < this.init.minReplicas) {
          throw tooFewCopies(f.path, h, have, this.init.minReplicas);
        }
      }
    }
    const files = b.files.map(({ path, size, sha256, chunks, baseVersion, meta }) => ({ path, size, sha256, chunks, baseVersion, ...(meta ? { meta } : {}) }));
    const { durable } = this.c.commit({ op: "commit", files, mtime: now });
    const reply: CommitReply = { versions: b.files.map((f) => ({ path: f.path, version: this.c.ns.version(f.path) })) };
    return durable.then(() => reply);
  }

  remove(b: { path: string; token?: number; session?: string }): Promise<void> {
    this.c.leases.check(b.path, b);
    return this.c.commit({ op: "rm", path: b.path }).durable;
  }

  move(b: { from: string; to: string; fromToken?: number; toToken?: number; session?: string }): Promise<void> {
    this.c.leases.check(b.from, { token: b.fromToken, session: b.session });
    this.c.leases.check(b.to, { token: b.toToken, session: b.session });
    return this.c.commit({ op: "mv", from: b.from, to: b.to }).durable;
  }
}
