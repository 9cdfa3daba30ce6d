import path from "node:path";
import { parser } from "../protocol/common.js";
import { DfsError } from "../protocol/errors.js";
import type { RegisterReply } from "../protocol/directory.js";
import { lockSchemas, type LockGrant } from "../protocol/lock.js";
import { Actor, type Handler, type Peer } from "../transport/actor.js";
import { later } from "../transport/mailbox.js";
import type { Logger } from "../log.js";
import { persistentId } from "./durable-file.js";
import { TokenSource } from "./lock/tokens.js";

export interface LockInit {
  dataDir: string;
  url: string;
}

export interface LockService {
  readonly actor: Actor;
  readonly nodeId: string;
  register(peer: Peer): Promise<void>;
  close(): Promise<void>;
}

interface Held {
  token: number;
  peer: Peer;
  owner: string;
  expiresAt: number;
  timer: NodeJS.Timeout;
}

interface Waiter {
  peer: Peer;
  owner: string;
  ttlMs: number;
  deadline: number;
  grant: (g: LockGrant) => void;
  fail: (e: DfsError) => void;
  timer: NodeJS.Timeout;
}

type AcquireBody = ReturnType<typeof lockSchemas.acquire.parse>;

/** The lock role: exclusive write locks with leases, FIFO waiters and monotonic fencing tokens. */
export async function createLock(components: { log: Logger }, init: LockInit): Promise<LockService> {
  const { log } = components;
  const dir = path.join(init.dataDir, "lock");
  const tokens = await TokenSource.open(path.join(dir, "tokens"));
  const nodeId = await persistentId(path.join(dir, "node-id"));
  const held = new Map<string, Held>();
  const waiting = new Map<string, Waiter[]>();
  let heartbeat: NodeJS.Timeout | undefined;

  function lockedError(p: string, h: Held): DfsError {
    const who = h.owner || h.peer.name;
    return new DfsError("LOCKED", `${p} is locked by ${who} until ${new Date(h.expiresAt).toISOString()}`, {
      details: { path: p, holder: who, expiresAt: h.expiresAt },
    });
  }

  async function grant(p: string, peer: Peer, owner: string, ttlMs: number): Promise<LockGrant> {
    const token = await tokens.take();
    const expiresAt = Date.now() + ttlMs;
    const timer = setTimeout(() => expire(p, token), ttlMs);
    timer.unref();
    held.set(p, { token, peer, owner, expiresAt, timer });
    log.debug("granted", { path: p, token, holder: owner || peer.name });
    return { path: p, token, expiresAt };
  }

  function free(p: string): void {
    const h = held.get(p);
    if (h) clearTimeout(h.timer);
    held.delete(p);
    const queue = waiting.get(p);
    while (queue && queue.length > 0) {
      const w = queue.shift()!;
      clearTimeout(w.timer);
      if (w.peer.closed || Date.now() > w.deadline) continue;
      void grant(p, w.peer, w.owner, w.ttlMs).then(w.grant, w.fail);
      break;
    }
    if (queue && queue.length === 0) waiting.delete(p);
  }

  function expire(p: string, token: number): void {
    if (held.get(p)?.token !== token) return;
    log.info("lease expired", { path: p, token });
    free(p);
  }

  function acquire(b: AcquireBody, peer: Peer): unknown {
    const h = held.get(b.path);
    if (!h) return grant(b.path, peer, b.owner, b.ttlMs);
    if (b.waitMs === 0) throw lockedError(b.path, h);
    // Queued without holding up the mailbox: the grant comes when the holder lets go.
    return later(new Promise<LockGrant>((resolve, reject) => {
      const queue = waiting.get(b.path) ?? [];
      const w: Waiter = {
        peer, owner: b.owner, ttlMs: b.ttlMs, deadline: Date.now() + b.waitMs, grant: resolve, fail: reject,
        timer: setTimeout(() => {
          const q = waiting.get(b.path);
          if (q) q.splice(q.indexOf(w), 1);
          const now = held.get(b.path);
          reject(now ? lockedError(b.path, now) : new DfsError("LOCKED", `${b.path} stayed locked for ${b.waitMs} ms`));
        }, b.waitMs),
      };
      queue.push(w);
      waiting.set(b.path, queue);
    }));
  }

  function mine(p: string, token: number, peer: Peer): Held {
    const h = held.get(p);
    if (!h || h.token !== token) {
      throw new DfsError("STALE_TOKEN", `the lock on ${p} with token ${token} is no longer held (lease expired or released)`);
    }
    if (h.peer !== peer) h.peer = peer; // The holder reconnected: its lease follows it.
    return h;
  }

  const handlers: Record<string, Handler> = {
    "lock.acquire": { allow: ["client", "directory"], parse: parser(lockSchemas.acquire), handle: acquire },
    "lock.renew": {
      allow: ["client", "directory"],
      parse: parser(lockSchemas.renew),
      handle: (b: { path: string; token: number; ttlMs: number }, peer: Peer): LockGrant => {
        const h = mine(b.path, b.token, peer);
        clearTimeout(h.timer);
        h.expiresAt = Date.now() + b.ttlMs;
        h.timer = setTimeout(() => expire(b.path, b.token), b.ttlMs);
        h.timer.unref();
        return { path: b.path, token: b.token, expiresAt: h.expiresAt };
      },
    },
    "lock.release": {
      allow: ["client", "directory"],
      parse: parser(lockSchemas.release),
      handle: (b: { path: string; token: number }, peer: Peer) => {
        mine(b.path, b.token, peer);
        free(b.path);
        return null;
      },
    },
  };

  const actor = new Actor({
    name: "lock",
    prefix: "lock.",
    concurrency: 1,
    handlers,
    onPeerClose: (peer) => {
      // A holder whose connection dropped is presumed dead; its locks go to the next in line.
      for (const [p, h] of held) if (h.peer === peer) {
        log.info("holder disconnected, releasing", { path: p, token: h.token });
        free(p);
      }
    },
  });

  async function register(peer: Peer): Promise<void> {
    const reply = await peer.request<RegisterReply>("dir.register", { kind: "lock", id: nodeId, url: init.url }, { timeoutMs: 30_000 });
    clearInterval(heartbeat);
    heartbeat = setInterval(() => {
      if (!peer.closed) void peer.tell("dir.heartbeat", { free: 0, used: 0, chunks: 0 }).catch(() => {});
    }, reply.heartbeatMs);
    heartbeat.unref();
    log.info("registered with directory", { id: nodeId });
  }

  return {
    actor,
    nodeId,
    register,
    async close() {
      clearInterval(heartbeat);
      actor.close();
      for (const h of held.values()) clearTimeout(h.timer);
      for (const q of waiting.values()) for (const w of q) clearTimeout(w.timer);
    },
  };
}
