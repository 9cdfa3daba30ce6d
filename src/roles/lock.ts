import path from "node:path";
import { parser } from "../protocol/common.js";
import type { RegisterReply } from "../protocol/directory.js";
import { lockSchemas } from "../protocol/lock.js";
import { Actor, type Handler, type Peer } from "../transport/actor.js";
import { later } from "../transport/mailbox.js";
import type { Logger } from "../log.js";
import { persistentId } from "./durable-file.js";
import { LockTable } from "./lock/table.js";
import type { Upstream } from "./upstream.js";

export interface LockInit {
  dataDir: string;
  url: string;
}

export interface LockService {
  readonly actor: Actor;
  readonly nodeId: string;
  /** Leases held here and claimants waiting. */
  counts(): { held: number; waiting: number };
  register(peer: Peer): Promise<void>;
  close(): Promise<void>;
}

type AcquireBody = ReturnType<typeof lockSchemas.acquire.parse>;
type RenewBody = ReturnType<typeof lockSchemas.renew.parse>;
type ReleaseBody = ReturnType<typeof lockSchemas.release.parse>;

/**
 * The lock role: exclusive write locks with leases and FIFO waiters. The directory records every lease (and
 * issues its fencing token) before the holder hears of it, so tokens only grow, and several lock services can
 * serve one cluster: a holder whose lock service died renews or releases through another one.
 */
export async function createLock(components: { log: Logger; directory: Upstream }, init: LockInit): Promise<LockService> {
  const { log } = components;
  const nodeId = await persistentId(path.join(init.dataDir, "lock", "node-id"));
  const table = new LockTable(components);
  let heartbeat: NodeJS.Timeout | undefined;

  const claimant = (b: { session: string; owner?: string; ttlMs?: number }, peer: Peer) =>
    ({ peer, session: b.session, owner: b.owner ?? "", ttlMs: b.ttlMs ?? 10_000 });

  const handlers: Record<string, Handler> = {
    "lock.acquire": {
      allow: ["client", "directory"],
      parse: parser(lockSchemas.acquire),
      // A grant waits on the directory and a waiter on the holder; the mailbox goes on meanwhile.
      handle: (b: AcquireBody, peer: Peer) => later(table.acquire(b.path, claimant(b, peer), b.waitMs)),
    },
    "lock.renew": {
      allow: ["client", "directory"],
      parse: parser(lockSchemas.renew),
      handle: (b: RenewBody, peer: Peer) => later(table.renew(b.path, b.token, claimant(b, peer))),
    },
    "lock.release": {
      allow: ["client", "directory"],
      parse: parser(lockSchemas.release),
      handle: (b: ReleaseBody, peer: Peer) => later(table.release(b.path, b.token, claimant(b, peer)).then(() => null)),
    },
  };

  const actor = new Actor({ name: "lock", prefix: "lock.", concurrency: 1, handlers, onPeerClose: (peer) => table.peerClosed(peer) });

  async function register(peer: Peer): Promise<void> {
    const reply = await peer.request<RegisterReply>("dir.register", { kind: "lock", id: nodeId, url: init.url }, { timeoutMs: 30_000 });
    // Synchronous, like every decision of the table, so it never interleaves with one.
    table.restore(reply.leases);
    clearInterval(heartbeat);
    heartbeat = setInterval(() => {
      if (!peer.closed) void peer.tell("dir.heartbeat", { free: 0, used: 0, chunks: 0 }).catch(() => {});
    }, reply.heartbeatMs);
    heartbeat.unref();
    log.info("registered with directory", { id: nodeId, leases: reply.leases.length });
  }

  return {
    actor,
    nodeId,
    counts: () => table.counts(),
    register,
    async close() {
      clearInterval(heartbeat);
      actor.close();
      table.close();
    },
  };
}
