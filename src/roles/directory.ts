import { randomBytes } from "node:crypto";
import path from "node:path";
import { dirSchemas, type HelloReply, type StatusReply } from "../protocol/directory.js";
import { MAX_CHUNK_SIZE, parser } from "../protocol/common.js";
import { DfsError } from "../protocol/errors.js";
import { Actor, type Handler, type Peer } from "../transport/actor.js";
import { later } from "../transport/mailbox.js";
import type { Logger } from "../log.js";
import type { Checkpointer } from "./directory/checkpoint.js";
import { openMetaStore, type MetaStore } from "./directory/metastore.js";
import { FileService } from "./directory/files.js";
import { Collector } from "./directory/gc.js";
import { Generations } from "./directory/gens.js";
import { Leases } from "./directory/leases.js";
import { Membership } from "./directory/membership.js";
import { Namespace } from "./directory/namespace.js";
import { NodeTable } from "./directory/nodes.js";
import { Repairer } from "./directory/repair.js";
import { DIRECTORY_SCHEMA, metaText, type DirRecord } from "./directory/schema.js";

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
  /** How long unused chunks are kept before deletion; default 1 h. */
  orphanGraceMs?: number;
}

export interface Directory {
  readonly actor: Actor;
  readonly store: MetaStore<DirRecord>;
  close(): Promise<void>;
}

const ALL = ["client", "storage", "lock", "directory"] as const;
const CLIENTS = ["client", "directory"] as const;
const LOCKS = ["lock", "directory"] as const;

/** The directory role: node registry and liveness, namespace, placement, commit, leases. Runs one message at a time. */
export async function createDirectory(components: { log: Logger; checkpointer?: Checkpointer }, init: DirectoryInit): Promise<Directory> {
  const log = components.log;
  if (init.chunkSize > MAX_CHUNK_SIZE) {
    throw new DfsError("BAD_REQUEST", `--chunk-size ${init.chunkSize} is larger than ${MAX_CHUNK_SIZE} bytes (16 MiB), the largest chunk one message can carry`);
  }
  const store = await openMetaStore<DirRecord>({
    dirs: init.metaDirs ?? [path.join(init.dataDir, "meta")],
    checkpointer: components.checkpointer,
    recoverHint: init.recoverHint,
    ...DIRECTORY_SCHEMA,
    snapshotEvery: init.snapshotEvery,
    log: log.child("meta"),
  });
  const db = store.db;
  const commit = (rec: DirRecord) => store.commit(rec);
  if (metaText(db, "cluster") === undefined) {
    const id = randomBytes(16).toString("hex");
    await commit({ op: "cluster", id }).durable;
    log.info("new cluster", { clusterId: id });
  }
  const gens = new Generations(db, commit);
  const leases = new Leases(db, commit);
  let repairer: Repairer | undefined;
  const nodes = new NodeTable(db, init.deadAfterMs, log, (id) => repairer?.nodeDown(id), () => repairer?.schedule());
  const ns = new Namespace(db, nodes);
  const collector = new Collector({ log: log.child("gc"), db, nodes, gens, commit }, { graceMs: init.orphanGraceMs ?? 3_600_000 });
  repairer = new Repairer({ log: log.child("repair"), nodes, ns, gens, collector }, { replicas: init.replicas });
  const heartbeatMs = Math.max(200, Math.min(5000, Math.floor(init.deadAfterMs / 3)));
  const members = new Membership({ log, db, commit, nodes, gens, leases, repairer, collector }, { replicas: init.replicas, heartbeatMs });
  const files = new FileService({ db, commit, nodes, ns, gens, leases, collector }, init);

  /** Read replies wait for pending records too, so nobody sees a change that could still be lost. */
  const settled = <T>(reply: T) => later(store.barrier().then(() => reply));
  const handler = <S extends import("zod").ZodTypeAny>(allow: readonly string[], schema: S, handle: (b: import("zod").output<S>, peer: Peer) => unknown): Handler =>
    ({ allow, parse: parser(schema), handle });
  const deferred = <B>(fn: (b: B, peer: Peer) => Promise<unknown>) => (b: B, peer: Peer) => later(fn(b, peer));

  const handlers: Record<string, Handler> = {
    "dir.register": handler(["storage", "lock", "directory"], dirSchemas.register, deferred((b, peer) => members.register(b, peer))),
    "dir.report": handler(["storage", "directory"], dirSchemas.report, deferred((b, peer) => members.report(b, peer))),
    "dir.heartbeat": handler(["storage", "lock", "directory"], dirSchemas.heartbeat, (b, peer) => {
      if (!nodes.heartbeat(peer, b)) throw new DfsError("BAD_REQUEST", "heartbeat before registration");
      return null;
    }),
    "dir.status": handler(ALL, dirSchemas.status, (): StatusReply => ({
      directory: {
        url: init.url, replicas: init.replicas, minReplicas: init.minReplicas, deadAfterSeconds: init.deadAfterMs / 1000,
        clusterId: members.clusterId,
      },
      nodes: nodes.list(),
      ...ns.totals(),
      underReplicated: repairer!.underReplicated,
      scannedAt: repairer!.scannedAt === null ? null : new Date(repairer!.scannedAt).toISOString(),
    })),
    "dir.hello": handler(ALL, dirSchemas.hello, (): HelloReply => ({
      lockUrl: nodes.lockUrl(), replicas: init.replicas, minReplicas: init.minReplicas, chunkSize: init.chunkSize,
    })),
    "dir.place": handler(CLIENTS, dirSchemas.place, deferred((b) => files.place(b))),
    "dir.stored": handler(["storage", "directory"], dirSchemas.stored, (b, peer) => files.stored(b, peer)),
    "dir.commit": handler(CLIENTS, dirSchemas.commit, deferred((b) => files.commit(b))),
    "dir.lookup": handler(ALL, dirSchemas.lookup, (b) => settled(ns.lookup(b.path))),
    "dir.list": handler(ALL, dirSchemas.list, (b) => settled({ entries: ns.list(b.prefix, b.limit) })),
    "dir.remove": handler(CLIENTS, dirSchemas.remove, deferred(async (b) => (await files.remove(b), null))),
    "dir.move": handler(CLIENTS, dirSchemas.move, deferred(async (b) => (await files.move(b), null))),
    "dir.badReplica": handler(["client", "storage", "directory"], dirSchemas.badReplica, (b, peer) => {
      const drop = async () => {
        await commit({ op: "unreplicate", node: b.node, hashes: [b.hash] }).durable;
        repairer!.chunkLost(b.hash, b.node);
      };
      // Checking with the node may take a while; the mailbox goes on meanwhile.
      return later(members.badReplica(b, peer, drop).then(() => null));
    }),
    "dir.lease": handler(LOCKS, dirSchemas.lease, deferred((b) => leases.lease(b))),
    "dir.unlease": handler(LOCKS, dirSchemas.unlease, (b) => (leases.unlease(b.path, b.token, b.session), null)),
  };

  const actor = new Actor({
    name: "directory",
    prefix: "dir.",
    concurrency: 1,
    handlers,
    onPeerClose: (peer) => nodes.detach(peer),
  });
  log.info("directory ready", { files: ns.totals().files, replicas: init.replicas, clusterId: members.clusterId });

  let closing: Promise<void> | undefined;
  return {
    actor,
    store,
    close() {
      closing ??= (async () => {
        actor.close();
        nodes.close();
        repairer!.close();
        collector.close();
        await store.close();
      })();
      return closing;
    },
  };
}
