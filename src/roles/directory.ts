import { dirSchemas, type CommitBody, type FileInfo, type HelloReply, type ListEntry, type StatusReply } from "../protocol/directory.js";
import { MAX_CHUNK_SIZE, parser } from "../protocol/common.js";
import { DfsError } from "../protocol/errors.js";
import { Actor, type Handler, type Peer } from "../transport/actor.js";
import { later } from "../transport/mailbox.js";
import type { Logger } from "../log.js";
import type { PeerPool } from "./upstream.js";
import type { Checkpointer } from "./directory/checkpoint.js";
import type { Awaitable, ClusterStatus, DirectoryActivity, DirectoryCore } from "./directory/core.js";
import type { MetaStore } from "./directory/metastore.js";
import type { DirRecord } from "./directory/schema.js";
import { openSqliteCore } from "./directory/sqlite-core.js";

export interface DirectoryInit {
  dataDir: string;
  /** This directory's own address, as shown by status. */
  url: string;
  replicas: number;
  minReplicas: number;
  deadAfterMs: number;
  chunkSize: number;
  /** `sqlite` or undefined: the embedded store in the data folder; otherwise a PostgreSQL URL. */
  metadata?: string;
  snapshotEvery?: number;
  /** Metadata folders, each a full copy (default: DATA/meta). */
  metaDirs?: string[];
  /** The command that repairs damaged metadata, named when start-up refuses it. */
  recoverHint?: string;
  /** How long unused chunks are kept before deletion; default 1 h. */
  orphanGraceMs?: number;
}

/** What the status page and the metrics read: the answers clients get, without a connection. */
export interface DirectoryView {
  status(): Promise<StatusReply>;
  list(prefix: string, limit: number): Promise<ListEntry[]>;
  lookup(path: string): Promise<FileInfo>;
  /** Since start: the activity of the back end, plus bytes of files committed and of files clients looked up to read. */
  activity(): DirectoryActivity & { writtenBytes: number; readBytes: number };
}

export interface Directory {
  readonly actor: Actor;
  readonly view: DirectoryView;
  /** The embedded store, when the directory runs on it. */
  readonly store?: MetaStore<DirRecord>;
  close(): Promise<void>;
}

const ALL = ["client", "storage", "lock", "directory"] as const;
const CLIENTS = ["client", "directory"] as const;
const LOCKS = ["lock", "directory"] as const;

/** Whether `--metadata` names PostgreSQL rather than the embedded store. */
export function isPostgresMetadata(metadata: string | undefined): metadata is string {
  return metadata !== undefined && metadata !== "sqlite";
}

/**
 * The directory role: node registry and liveness, namespace, placement, commit, leases. Messages are taken one at
 * a time; a handler whose answer waits (for the disk or the database) lets the next one start meanwhile.
 */
export async function createDirectory(
  components: { log: Logger; checkpointer?: Checkpointer; peers?: PeerPool },
  init: DirectoryInit,
): Promise<Directory> {
  const log = components.log;
  if (init.chunkSize > MAX_CHUNK_SIZE) {
    throw new DfsError("BAD_REQUEST", `--chunk-size ${init.chunkSize} is larger than ${MAX_CHUNK_SIZE} bytes (16 MiB), the largest chunk one message can carry`);
  }
  const heartbeatMs = Math.max(200, Math.min(5000, Math.floor(init.deadAfterMs / 3)));
  let core: DirectoryCore;
  let store: MetaStore<DirRecord> | undefined;
  if (isPostgresMetadata(init.metadata)) {
    if (!components.peers) throw new DfsError("BAD_REQUEST", "a directory on PostgreSQL needs connections to storage nodes");
    // Loaded only here: the PostgreSQL client is no part of a directory on sql.js, nor of any other role.
    const { openPgCore } = await import("./directory/pg/core.js");
    core = await openPgCore({ log, peers: components.peers }, { ...init, url: init.metadata, heartbeatMs });
  } else {
    const sqlite = await openSqliteCore(components, { ...init, heartbeatMs });
    core = sqlite;
    store = sqlite.store;
  }

  const handler = <S extends import("zod").ZodTypeAny>(allow: readonly string[], schema: S, handle: (b: import("zod").output<S>, peer: Peer) => unknown): Handler =>
    ({ allow, parse: parser(schema), handle });
  /** The reply made of a back end's answer; one that is not ready yet lets the mailbox go on meanwhile. */
  const answer = <T>(r: Awaitable<T>, reply: (v: T) => unknown = (v) => v) => (r instanceof Promise ? later(r.then(reply)) : reply(r));
  const done = (r: Awaitable<void>) => answer(r, () => null);

  const statusOf = (s: ClusterStatus): StatusReply => ({
    directory: {
      url: init.url, replicas: init.replicas, minReplicas: init.minReplicas, deadAfterSeconds: init.deadAfterMs / 1000,
      clusterId: core.clusterId,
    },
    ...s,
  });
  const volume = { writtenBytes: 0, readBytes: 0 };
  const commit = (b: CommitBody) => core.commit(b).then((reply) => {
    for (const f of b.files) volume.writtenBytes += f.size;
    return reply;
  });
  const lookup = (path: string, peer: Peer) => core.lookup(path).then((info) => {
    if (peer.role === "client") volume.readBytes += info.size;
    return info;
  });

  const handlers: Record<string, Handler> = {
    "dir.register": handler(["storage", "lock", "directory"], dirSchemas.register, (b, peer) => later(core.register(b, peer))),
    "dir.report": handler(["storage", "directory"], dirSchemas.report, (b, peer) => later(core.report(b, peer))),
    "dir.heartbeat": handler(["storage", "lock", "directory"], dirSchemas.heartbeat, (b, peer) => done(core.heartbeat(b, peer))),
    "dir.status": handler(ALL, dirSchemas.status, () => answer(core.status(), statusOf)),
    "dir.hello": handler(ALL, dirSchemas.hello, () => answer(core.lockUrl(), (lockUrl): HelloReply => ({
      lockUrl, replicas: init.replicas, minReplicas: init.minReplicas, chunkSize: init.chunkSize,
    }))),
    "dir.place": handler(CLIENTS, dirSchemas.place, (b) => later(core.place(b))),
    "dir.stored": handler(["storage", "directory"], dirSchemas.stored, (b, peer) => answer(core.stored(b, peer))),
    "dir.commit": handler(CLIENTS, dirSchemas.commit, (b) => later(commit(b))),
    "dir.lookup": handler(ALL, dirSchemas.lookup, (b, peer) => later(lookup(b.path, peer))),
    "dir.list": handler(ALL, dirSchemas.list, (b) => later(core.list(b.prefix, b.limit, { after: b.after, withMeta: b.meta }).then((entries) => ({ entries })))),
    "dir.remove": handler(CLIENTS, dirSchemas.remove, (b) => done(core.remove(b))),
    "dir.move": handler(CLIENTS, dirSchemas.move, (b) => done(core.move(b))),
    // Checking with the node may take a while; the mailbox goes on meanwhile.
    "dir.badReplica": handler(["client", "storage", "directory"], dirSchemas.badReplica, (b, peer) => done(core.badReplica(b, peer))),
    "dir.lease": handler(LOCKS, dirSchemas.lease, (b) => later(core.lease(b))),
    "dir.unlease": handler(LOCKS, dirSchemas.unlease, (b) => done(core.unlease(b))),
    // A client certificate reads and writes every file already; a key only narrows what an S3 client may do.
    "dir.s3key.add": handler(CLIENTS, dirSchemas.s3keyAdd, (b) => later(core.s3keys.add(b.buckets))),
    "dir.s3key.list": handler(CLIENTS, dirSchemas.s3keyList, () => later(core.s3keys.list().then((keys) => ({ keys })))),
    "dir.s3key.remove": handler(CLIENTS, dirSchemas.s3keyRemove, (b) => later(core.s3keys.remove(b.id).then(() => null))),
    "dir.s3key.get": handler(CLIENTS, dirSchemas.s3keyGet, (b) => later(core.s3keys.get(b.id))),
  };

  const actor = new Actor({ name: "directory", prefix: "dir.", concurrency: 1, handlers, onPeerClose: (peer) => core.detach(peer) });
  log.info("directory ready", { files: await core.files(), replicas: init.replicas, clusterId: core.clusterId, metadata: store ? "sqlite" : "postgres" });

  let closing: Promise<void> | undefined;
  return {
    actor,
    store,
    view: {
      status: async () => statusOf(await core.status()),
      list: (prefix, limit) => core.list(prefix, limit),
      lookup: (path) => core.lookup(path),
      activity: () => ({ ...core.activity(), ...volume }),
    },
    close() {
      closing ??= (async () => {
        actor.close();
        await core.close();
      })();
      return closing;
    },
  };
}
