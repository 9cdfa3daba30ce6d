import { randomBytes } from "node:crypto";
import path from "node:path";
import type { Logger } from "../../log.js";
import type { Checkpointer } from "./checkpoint.js";
import type { DirectoryCore } from "./core.js";
import { FileService } from "./files.js";
import { Collector } from "./gc.js";
import { Generations } from "./gens.js";
import { Leases } from "./leases.js";
import { Membership } from "./membership.js";
import { openMetaStore, type MetaStore } from "./metastore.js";
import { Namespace } from "./namespace.js";
import { NodeTable } from "./nodes.js";
import { Repairer } from "./repair.js";
import { SqliteS3Keys } from "./s3keys.js";
import { DIRECTORY_SCHEMA, metaText, type DirRecord } from "./schema.js";
import { DfsError } from "../../protocol/errors.js";

export interface SqliteCoreInit {
  dataDir: string;
  replicas: number;
  minReplicas: number;
  deadAfterMs: number;
  heartbeatMs: number;
  snapshotEvery?: number;
  metaDirs?: string[];
  recoverHint?: string;
  orphanGraceMs?: number;
}

/**
 * The embedded back end: sql.js in memory, journaled to the data folder. Every change is applied at once, in
 * the order messages arrive, and answered once its record is on disk; reads wait for the records before them.
 */
export async function openSqliteCore(components: { log: Logger; checkpointer?: Checkpointer }, init: SqliteCoreInit): Promise<DirectoryCore & { store: MetaStore<DirRecord> }> {
  const log = components.log;
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
  const scan = { under: 0, at: null as number | null };
  repairer = new Repairer({
    log: log.child("repair"),
    source: {
      leading: () => true,
      replicaPage: (cursor, limit) => ns.replicaPage(cursor, limit),
      upStorage: () => nodes.upStorage(),
      liveReplicas: (hash) => nodes.liveReplicas(hash),
      liveHolders: (hash) => nodes.liveHolders(hash),
      takeGen: async () => {
        const gen = gens.take();
        await gens.whenDurable();
        return gen;
      },
      copy: async (node, body) => {
        const peer = nodes.peerOf(node);
        return peer ? peer.request<{ copied: number }>("store.copy", body, { timeoutMs: 120_000 }) : { copied: 0 };
      },
      drop: (replicas, why) => collector.drop([], replicas, why),
      scanned: (under, at) => Object.assign(scan, { under, at }),
    },
  }, { replicas: init.replicas });
  const members = new Membership({ log, db, commit, nodes, gens, leases, repairer, collector }, { replicas: init.replicas, heartbeatMs: init.heartbeatMs });
  const files = new FileService({ db, commit, nodes, ns, gens, leases, collector }, init);
  /** Read replies wait for pending records too, so nobody sees a change that could still be lost. */
  const settled = <T>(reply: T) => store.barrier().then(() => reply);

  let closing: Promise<void> | undefined;
  return {
    store,
    get clusterId() {
      return members.clusterId;
    },
    register: (b, peer) => members.register(b, peer),
    report: (b, peer) => members.report(b, peer),
    heartbeat(b, peer) {
      if (!nodes.heartbeat(peer, b)) throw new DfsError("BAD_REQUEST", "heartbeat before registration");
    },
    detach: (peer) => nodes.detach(peer),
    status: () => ({
      nodes: nodes.list(),
      ...ns.totals(),
      underReplicated: scan.under,
      scannedAt: scan.at === null ? null : new Date(scan.at).toISOString(),
    }),
    activity: () => ({
      repairCopies: repairer!.copies, gcDeleted: collector.deleted,
      journalBytes: store.stats.journalBytes, snapshotBytes: store.stats.snapshotBytes,
    }),
    lockUrl: () => nodes.lockUrl(),
    place: (b) => files.place(b),
    stored: (b, peer) => files.stored(b, peer),
    commit: (b) => files.commit(b),
    lookup: (p) => settled(ns.lookup(p)),
    list: (prefix, limit, opts) => settled(ns.list(prefix, limit, opts)),
    remove: (b) => files.remove(b),
    move: (b) => files.move(b),
    badReplica(b, peer) {
      const drop = async () => {
        await commit({ op: "unreplicate", node: b.node, hashes: [b.hash] }).durable;
        repairer!.chunkLost(b.hash, b.node);
      };
      return members.badReplica(b, peer, drop);
    },
    lease: (b) => leases.lease(b),
    unlease: (b) => leases.unlease(b.path, b.token, b.session),
    s3keys: new SqliteS3Keys(db, commit, settled),
    files: () => ns.totals().files,
    close() {
      closing ??= (async () => {
        nodes.close();
        repairer!.close();
        collector.close();
        await store.close();
      })();
      return closing;
    },
  };
}
