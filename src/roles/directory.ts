import path from "node:path";
import { dirSchemas, type CommitReply, type HelloReply, type PlaceReply, type RegisterReply, type StatusReply } from "../protocol/directory.js";
import { parser } from "../protocol/common.js";
import { DfsError } from "../protocol/errors.js";
import { Actor, type Handler, type Peer } from "../transport/actor.js";
import { later } from "../transport/mailbox.js";
import type { Logger } from "../log.js";
import type { Checkpointer } from "./directory/checkpoint.js";
import { openMetaStore, type MetaStore } from "./directory/metastore.js";
import { Collector } from "./directory/gc.js";
import { Namespace } from "./directory/namespace.js";
import { NodeTable } from "./directory/nodes.js";
import { notEnoughNodes, pickTargets } from "./directory/placement.js";
import { Repairer } from "./directory/repair.js";
import { applyRecord, SCHEMA, type DirRecord } from "./directory/schema.js";

export interface DirectoryInit {
  dataDir: string;
  /** This directory's own address, as shown by status. */
  url: string;
  replicas: number;
  minReplicas: number;
  deadAfterMs: number;
  chunkSize: number;
  snapshotEvery?: number;
  /** Metadata folders, each a full copy (default: DATA/meta). */
  metaDirs?: string[];
  /** The command that repairs damaged metadata, named when start-up refuses it. */
  recoverHint?: string;
  /** How long unreferenced chunks are kept before deletion; default 1 h. */
  orphanGraceMs?: number;
}

export interface Directory {
  readonly actor: Actor;
  readonly store: MetaStore<DirRecord>;
  close(): Promise<void>;
}

const ALL = ["client", "storage", "lock", "directory"] as const;
const CLIENTS = ["client", "directory"] as const;

/** The directory role: node registry and liveness, namespace, placement, commit. Runs one message at a time. */
export async function createDirectory(components: { log: Logger; checkpointer?: Checkpointer }, init: DirectoryInit): Promise<Directory> {
  const log = components.log;
  const store = await openMetaStore<DirRecord>({
    dirs: init.metaDirs ?? [path.join(init.dataDir, "meta")],
    checkpointer: components.checkpointer,
    recoverHint: init.recoverHint,
    schema: SCHEMA,
    apply: applyRecord,
    snapshotEvery: init.snapshotEvery,
    log: log.child("meta"),
  });
  const db = store.db;
  const repairer = new Repairer({ log: log.child("repair") }, { replicas: init.replicas });
  const nodes = new NodeTable(db, init.deadAfterMs, log, (id) => repairer.nodeDown(id));
  const ns = new Namespace(db, nodes);
  repairer.bind(nodes, ns);
  const gc = new Collector(
    { log: log.child("gc"), db, nodes, commit: (rec) => store.commit(rec).durable },
    { graceMs: init.orphanGraceMs ?? 3_600_000 },
  );
  const heartbeatMs = Math.max(200, Math.min(5000, Math.floor(init.deadAfterMs / 3)));

  /** Applies and journals a change; the reply waits until it is on disk. */
  const durable = <T>(rec: DirRecord, reply: T) => {
    const { durable } = store.commit(rec);
    return later(durable.then(() => reply));
  };
  /** Read replies wait for pending records too, so nobody sees a change that could still be lost. */
  const settled = <T>(reply: T) => later(store.barrier().then(() => reply));

  const handlers: Record<string, Handler> = {
    "dir.register": {
      allow: ["storage", "lock", "directory"],
      parse: parser(dirSchemas.register),
      handle: (b: ReturnType<typeof dirSchemas.register.parse>, peer: Peer) => {
        if (b.kind !== peer.role && peer.role !== "directory") {
          throw new DfsError("FORBIDDEN", `a ${peer.role} certificate may not register as ${b.kind}`);
        }
        store.commit({ op: "node", id: b.id, role: b.kind, url: b.url, zone: b.zone, capacity: b.capacity });
        const rec: DirRecord | undefined = b.kind === "storage" ? { op: "reconcile", node: b.id, hashes: b.chunks } : undefined;
        const { durable: done } = rec ? store.commit(rec) : { durable: store.barrier() };
        nodes.attach(b.id, peer, { free: b.free, used: b.used, chunks: b.chunks.length });
        if (b.kind === "storage") repairer.nodeUp(b.id);
        const reply: RegisterReply = { accepted: true, replicas: init.replicas, heartbeatMs };
        return later(done.then(() => reply));
      },
    },
    "dir.heartbeat": {
      allow: ["storage", "lock", "directory"],
      parse: parser(dirSchemas.heartbeat),
      handle: (b: ReturnType<typeof dirSchemas.heartbeat.parse>, peer: Peer) => {
        if (!nodes.heartbeat(peer, b)) throw new DfsError("BAD_REQUEST", "heartbeat before registration");
        return null;
      },
    },
    "dir.status": {
      allow: ALL,
      parse: parser(dirSchemas.status),
      handle: (): StatusReply => ({
        directory: { url: init.url, replicas: init.replicas, minReplicas: init.minReplicas, deadAfterSeconds: init.deadAfterMs / 1000 },
        nodes: nodes.list(),
        ...ns.totals(init.replicas),
      }),
    },
    "dir.hello": {
      allow: ALL,
      parse: parser(dirSchemas.hello),
      handle: (): HelloReply => ({ lockUrl: nodes.lockUrl(), replicas: init.replicas, minReplicas: init.minReplicas, chunkSize: init.chunkSize }),
    },
    "dir.place": {
      allow: CLIENTS,
      parse: parser(dirSchemas.place),
      handle: (b: ReturnType<typeof dirSchemas.place.parse>): PlaceReply => {
        const up = nodes.upStorage();
        const chunks = b.chunks.map(({ hash, size }) => {
          const existing = nodes.liveReplicas(hash).map((r) => r.node);
          const want = init.replicas - existing.length;
          if (want <= 0) return { hash, targets: [] };
          const targets = pickTargets(up, size, want, { existing, exclude: b.exclude });
          if (existing.length + targets.length < init.minReplicas) {
            const withRoom = up.filter((n) => !b.exclude.includes(n.id) && n.free >= size).length;
            throw notEnoughNodes(withRoom, init.minReplicas);
          }
          return { hash, targets };
        });
        return { chunks };
      },
    },
    "dir.stored": {
      allow: ["storage", "directory"],
      parse: parser(dirSchemas.stored),
      handle: (b: ReturnType<typeof dirSchemas.stored.parse>, peer: Peer) => {
        const node = nodes.idOf(peer);
        if (!node) throw new DfsError("BAD_REQUEST", "chunk report before registration");
        // No need to wait for the disk: a commit naming these chunks is journaled after this record, so
        // once the commit is durable this is too; and a node re-reports all its chunks when it reconnects.
        store.commit({ op: "replicas", node, add: b.chunks });
        nodes.bump(node, b.chunks);
        return null;
      },
    },
    "dir.commit": {
      allow: CLIENTS,
      parse: parser(dirSchemas.commit),
      handle: (b: ReturnType<typeof dirSchemas.commit.parse>) => {
        for (const f of b.files) {
          for (const h of new Set(f.chunks)) {
            const have = ns.liveCount(h);
            if (have < init.minReplicas) {
              throw new DfsError("NOT_ENOUGH_NODES", `chunk ${h.slice(0, 12)} of ${f.path} is on ${have} live node(s), ${init.minReplicas} needed; nothing was committed`);
            }
          }
        }
        store.commit({ op: "commit", files: b.files, mtime: Date.now() });
        const reply: CommitReply = { versions: b.files.map((f) => ({ path: f.path, version: ns.version(f.path) })) };
        return later(store.barrier().then(() => reply));
      },
    },
    "dir.lookup": {
      allow: ALL,
      parse: parser(dirSchemas.lookup),
      handle: (b: { path: string }) => settled(ns.lookup(b.path)),
    },
    "dir.list": {
      allow: ALL,
      parse: parser(dirSchemas.list),
      handle: (b: { prefix: string; limit: number }) => settled({ entries: ns.list(b.prefix, b.limit) }),
    },
    "dir.remove": {
      allow: CLIENTS,
      parse: parser(dirSchemas.remove),
      handle: (b: { path: string; token?: number }) => durable({ op: "rm", path: b.path, token: b.token }, null),
    },
    "dir.move": {
      allow: CLIENTS,
      parse: parser(dirSchemas.move),
      handle: (b: { from: string; to: string; token?: number }) => durable({ op: "mv", from: b.from, to: b.to, token: b.token }, null),
    },
    "dir.badReplica": {
      allow: ["client", "storage", "directory"],
      parse: parser(dirSchemas.badReplica),
      handle: (b: { hash: string; node: string; reason: string }) => {
        log.warn("bad replica reported", { hash: b.hash, node: b.node, reason: b.reason });
        const rec = store.commit({ op: "unreplicate", node: b.node, hashes: [b.hash] });
        repairer.chunkLost(b.hash, b.node);
        return later(rec.durable.then(() => null));
      },
    },
  };

  const actor = new Actor({
    name: "directory",
    prefix: "dir.",
    concurrency: 1,
    handlers,
    onPeerClose: (peer) => nodes.detach(peer),
  });
  log.info("directory ready", { files: ns.totals(init.replicas).files, replicas: init.replicas });

  let closing: Promise<void> | undefined;
  return {
    actor,
    store,
    close() {
      closing ??= (async () => {
        actor.close();
        nodes.close();
        repairer.close();
        gc.close();
        await store.close();
      })();
      return closing;
    },
  };
}
