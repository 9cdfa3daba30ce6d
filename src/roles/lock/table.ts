import type { LeaseInfo, LeaseReply } from "../../protocol/directory.js";
import { DfsError, toDfsError } from "../../protocol/errors.js";
import type { LockGrant } from "../../protocol/lock.js";
import type { Peer } from "../../transport/actor.js";
import type { Logger } from "../../log.js";
import type { Upstream } from "../upstream.js";

/** Who asks for a lock: the connection, its certificate name, the client's session and what others are shown. */
export interface Claimant {
  peer: Peer;
  session: string;
  owner: string;
  ttlMs: number;
}

interface Holder {
  token: number;
  session: string;
  /** Certificate name of the holder; renew and release must come from the same certificate and session. */
  cert: string;
  owner: string;
  peer: Peer;
  expiresAt: number;
  timer: NodeJS.Timeout;
}

interface Waiter extends Claimant {
  deadline: number;
  resolve: (g: LockGrant) => void;
  reject: (e: DfsError) => void;
  /** Answers LOCKED at the deadline while the waiter is queued. */
  timer?: NodeJS.Timeout;
}

/**
 * One path's lock: at most one holder, or one grant under way, and a FIFO of waiters. While the directory
 * refuses the first waiter (the path is held through another lock service), `poll` asks it again later.
 */
interface Entry {
  holder?: Holder;
  granting?: Waiter;
  poll?: NodeJS.Timeout;
  /** The directory's last refusal, which names the holder for those who find the path taken meanwhile. */
  elsewhere?: DfsError;
  waiters: Waiter[];
}

const LEASE_TIMEOUT_MS = 15_000;
const UNLEASE_TIMEOUT_MS = 3_000;
const UNLEASE_RETRY_MS = 2_000;
/** Nothing tells this table when a lease held through another lock service ends, so it asks at this pace. */
const POLL_MS = 250;

/**
 * The lock table. Every change is decided synchronously inside the serial mailbox; a grant reserves the path
 * (`granting`) before it asks the directory to record the lease, so that nothing can take the path meanwhile,
 * and the holder is known only once the directory answered with the token. The directory has the last word:
 * several lock services may serve one cluster, and a lease this table never granted is known only there.
 */
export class LockTable {
  private readonly entries = new Map<string, Entry>();
  /** Leases that ended here but that the directory has not yet been told of (it was unreachable): path -> token. */
  private readonly ending = new Map<string, number>();
  private retrying?: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly c: { log: Logger; directory: Upstream }) {}

  /** Leases held here and claimants waiting, for the metrics. */
  counts(): { held: number; waiting: number } {
    let held = 0;
    let waiting = 0;
    for (const e of this.entries.values()) {
      if (e.holder) held++;
      waiting += e.waiters.length + (e.granting ? 1 : 0);
    }
    return { held, waiting };
  }

  acquire(path: string, who: Claimant, waitMs: number): Promise<LockGrant> {
    const e = this.entries.get(path);
    const h = e?.holder;
    // The holder asking again (its earlier answer was lost with its connection) gets its lease back, renewed:
    // it counts the lease from now.
    if (h && h.session === who.session && h.cert === who.peer.name) return this.renew(path, h.token, who);
    if (e && (e.holder || e.granting || e.poll) && waitMs === 0) throw this.lockedError(path, e);
    return new Promise<LockGrant>((resolve, reject) => {
      const w: Waiter = { ...who, deadline: Date.now() + waitMs, resolve, reject };
      if (e && (e.holder || e.granting || e.poll)) return this.enqueue(path, e, w, false);
      const entry = e ?? { waiters: [] };
      this.entries.set(path, entry);
      this.grant(path, entry, w);
    });
  }

  /**
   * Renews a lease for its holder (same certificate and session); the directory records the new end first.
   * A lease this table does not know (granted by a lock service that died, or before a restart) is adopted
   * once the directory renewed it for that session.
   */
  async renew(path: string, token: number, who: Claimant): Promise<LockGrant> {
    if (!this.entries.get(path)?.holder) return this.adopt(path, token, who);
    const h = this.holderFor(path, token, who);
    const sent = Date.now();
    let reply: LeaseReply;
    try {
      reply = await this.c.directory.request<LeaseReply>("dir.lease", { path, token, owner: h.owner, session: h.session, ttlMs: who.ttlMs }, { timeoutMs: LEASE_TIMEOUT_MS });
    } catch (err) {
      const e = toDfsError(err);
      // The directory no longer knows this lease: it is over, whatever this table thought.
      if (e.code === "STALE_TOKEN" && this.entries.get(path)?.holder === h) this.free(path, false);
      throw e;
    }
    if (this.entries.get(path)?.holder !== h) throw this.staleError(path, token);
    h.peer = who.peer;
    this.arm(path, h, sent + who.ttlMs);
    return { path, token, expiresAt: reply.expiresAt, remainingMs: Math.max(0, h.expiresAt - Date.now()) };
  }

  /**
   * Releases a lease for its holder; resolves once the directory forgot it, so the next command sees the path
   * free. A lease this table does not know is ended at the directory, which checks the session.
   */
  async release(path: string, token: number, who: Claimant): Promise<void> {
    if (this.entries.get(path)?.holder || this.ending.get(path) === token) {
      this.holderFor(path, token, who);
      return this.free(path, true);
    }
    await this.c.directory.request("dir.unlease", { path, token, session: who.session }, { timeoutMs: UNLEASE_TIMEOUT_MS });
    // Those waiting here were held off by that very lease: ask for them now rather than at the next poll.
    const e = this.entries.get(path);
    if (e?.poll) {
      clearTimeout(e.poll);
      e.poll = undefined;
      this.next(path);
    }
  }

  /** A connection closed: its holders are presumed dead and their locks go to the next in line; its waiters leave. */
  peerClosed(peer: Peer): void {
    for (const [path, e] of this.entries) {
      if (e.holder?.peer === peer) {
        this.c.log.info("holder disconnected, releasing", { path, token: e.holder.token });
        void this.free(path, true);
      }
      for (const w of e.waiters.filter((x) => x.peer === peer)) {
        clearTimeout(w.timer);
        e.waiters.splice(e.waiters.indexOf(w), 1);
      }
    }
  }

  /**
   * Takes the directory's view after (re)registering: local holders it does not know are gone, and leases this
   * table let go of are told again. Leases it holds that this table lacks are left to their holders' renewals
   * (see renew): another lock service may be serving them.
   */
  restore(all: LeaseInfo[]): void {
    for (const [path, token] of this.ending) void this.unlease(path, token);
    const byPath = new Map(all.map((l) => [l.path, l]));
    for (const [path, e] of this.entries) {
      if (e.holder && byPath.get(path)?.token !== e.holder.token) {
        this.c.log.warn("lease unknown to the directory, dropped", { path, token: e.holder.token });
        void this.free(path, false);
      }
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retrying);
    const closing = new DfsError("UNAVAILABLE", "the lock service is shutting down");
    for (const e of this.entries.values()) {
      if (e.holder) clearTimeout(e.holder.timer);
      clearTimeout(e.poll);
      for (const w of e.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(closing);
      }
    }
  }

  /** Asks the directory to record a lease for `w`; while another session's lease runs, `w` stays first in line. */
  private grant(path: string, entry: Entry, w: Waiter): void {
    entry.granting = w;
    const sent = Date.now();
    const body = { path, owner: w.owner, session: w.session, ttlMs: w.ttlMs };
    this.c.directory.request<LeaseReply>("dir.lease", body, { timeoutMs: LEASE_TIMEOUT_MS }).then(
      (reply) => {
        if (this.entries.get(path) !== entry || entry.granting !== w) {
          void this.unlease(path, reply.token);
          w.reject(new DfsError("UNAVAILABLE", `the lock service lost track of ${path} while granting it; try again`));
          return;
        }
        entry.granting = undefined;
        entry.elsewhere = undefined;
        this.ending.delete(path); // the new lease replaced whatever the directory still had
        // A lease adopted meanwhile is over: the directory granted this one after it (to the same session).
        if (entry.holder) clearTimeout(entry.holder.timer);
        const h: Holder = {
          token: reply.token, session: w.session, cert: w.peer.name, owner: w.owner, peer: w.peer,
          expiresAt: 0, timer: undefined as unknown as NodeJS.Timeout,
        };
        entry.holder = h;
        // Timed from before the request: this table lets go no later than the directory does.
        this.arm(path, h, sent + w.ttlMs);
        this.c.log.debug("granted", { path, token: h.token, holder: w.owner || w.peer.name });
        if (w.peer.closed) void this.free(path, true);
        w.resolve({ path, token: h.token, expiresAt: reply.expiresAt, remainingMs: Math.max(0, h.expiresAt - Date.now()) });
      },
      (err) => {
        const e = toDfsError(err);
        if (entry.granting === w) entry.granting = undefined;
        if (e.code === "LOCKED" && this.entries.get(path) === entry && !this.closed && !w.peer.closed && Date.now() < w.deadline) {
          entry.elsewhere = e;
          this.enqueue(path, entry, w, true);
          const remaining = Number(e.details?.remainingMs);
          const delay = Math.min(Number.isFinite(remaining) ? Math.max(0, remaining) : POLL_MS, POLL_MS, w.deadline - Date.now());
          entry.poll = setTimeout(() => {
            entry.poll = undefined;
            this.next(path);
          }, delay);
          return;
        }
        w.reject(e);
        this.next(path);
      },
    );
  }

  /** Takes on a lease granted elsewhere, once the directory renewed it for the session that asks. */
  private async adopt(path: string, token: number, who: Claimant): Promise<LockGrant> {
    // A lease this table let go of stays gone, though the directory may not have heard yet.
    if (this.ending.get(path) === token) throw this.staleError(path, token);
    const sent = Date.now();
    const body = { path, token, owner: who.owner, session: who.session, ttlMs: who.ttlMs };
    const reply = await this.c.directory.request<LeaseReply>("dir.lease", body, { timeoutMs: LEASE_TIMEOUT_MS });
    const e = this.entries.get(path) ?? { waiters: [] };
    this.entries.set(path, e);
    const known = e.holder;
    // Granted here meanwhile, or released through here: the directory has seen a later word than this renewal.
    if ((known && known.token !== token) || this.ending.get(path) === token) {
      if (!known) this.next(path);
      throw this.staleError(path, token);
    }
    const h: Holder = known ?? {
      token, session: who.session, cert: who.peer.name, owner: reply.owner, peer: who.peer,
      expiresAt: 0, timer: undefined as unknown as NodeJS.Timeout,
    };
    if (h.session !== who.session || h.cert !== who.peer.name) throw this.forbidden(path);
    if (!known) this.c.log.info("lease adopted", { path, token });
    e.holder = h;
    h.peer = who.peer;
    this.arm(path, h, sent + who.ttlMs);
    // Its connection closed while the directory answered: the holder is as gone as if it had been known here.
    if (who.peer.closed) void this.free(path, true);
    return { path, token, expiresAt: reply.expiresAt, remainingMs: Math.max(0, h.expiresAt - Date.now()) };
  }

  /** Queues a waiter, answered LOCKED at its deadline unless granted first. */
  private enqueue(path: string, e: Entry, w: Waiter, first: boolean): void {
    w.timer = setTimeout(() => {
      const i = e.waiters.indexOf(w);
      if (i < 0) return;
      e.waiters.splice(i, 1);
      w.reject(this.lockedError(path, e));
    }, Math.max(0, w.deadline - Date.now()));
    if (first) e.waiters.unshift(w);
    else e.waiters.push(w);
  }

  private arm(path: string, h: Holder, expiresAt: number): void {
    clearTimeout(h.timer);
    h.expiresAt = expiresAt;
    h.timer = setTimeout(() => {
      if (this.entries.get(path)?.holder !== h) return;
      this.c.log.info("lease expired", { path, token: h.token });
      void this.free(path, true);
    }, Math.max(0, expiresAt - Date.now()));
    h.timer.unref();
  }

  /** Ends the current holder's lease (telling the directory, unless it already knows) and hands the path on. */
  private free(path: string, tell: boolean): Promise<void> {
    const e = this.entries.get(path);
    const h = e?.holder;
    if (!e || !h) return Promise.resolve();
    clearTimeout(h.timer);
    e.holder = undefined;
    const told = tell ? this.unlease(path, h.token) : Promise.resolve();
    this.next(path);
    return told;
  }

  private unlease(path: string, token: number): Promise<void> {
    this.ending.set(path, token);
    this.retryEnding();
    // Short: a release is answered after this, and the lease is told again later if need be.
    return this.c.directory.request("dir.unlease", { path, token }, { timeoutMs: UNLEASE_TIMEOUT_MS }).then(
      () => void (this.ending.get(path) === token && this.ending.delete(path)),
      // Told again when the link to the directory is back; meanwhile the path stays fenced, never less.
      (err) => this.c.log.warn("could not tell the directory a lease ended", { path, token, err: toDfsError(err).message }),
    );
  }

  /** While some ended leases are not yet known to the directory, tells it again now and then. */
  private retryEnding(): void {
    if (this.retrying || this.closed) return;
    this.retrying = setTimeout(() => {
      this.retrying = undefined;
      if (this.ending.size === 0) return;
      for (const [path, token] of this.ending) void this.unlease(path, token);
    }, UNLEASE_RETRY_MS);
    this.retrying.unref();
  }

  /** Grants the path to the first waiter still there; every waiter that is skipped gets an answer. */
  private next(path: string): void {
    const e = this.entries.get(path);
    if (!e || e.holder || e.granting || e.poll) return;
    while (e.waiters.length > 0) {
      const w = e.waiters.shift()!;
      clearTimeout(w.timer);
      if (w.peer.closed) continue;
      if (Date.now() > w.deadline) {
        w.reject(this.lockedError(path, e));
        continue;
      }
      this.grant(path, e, w);
      return;
    }
    this.entries.delete(path);
  }

  private holderFor(path: string, token: number, who: Claimant): Holder {
    const h = this.entries.get(path)?.holder;
    if (!h || h.token !== token) throw this.staleError(path, token);
    if (h.session !== who.session || h.cert !== who.peer.name) throw this.forbidden(path);
    return h;
  }

  private forbidden(path: string): DfsError {
    return new DfsError("FORBIDDEN", `only the holder of the lock on ${path} may renew or release it`);
  }

  private staleError(path: string, token: number): DfsError {
    return new DfsError("STALE_TOKEN", `the lock on ${path} with token ${token} is no longer held (lease expired or released)`, {
      details: { path, token },
    });
  }

  private lockedError(path: string, e: Entry | undefined): DfsError {
    const h = e?.holder;
    if (h) {
      return new DfsError("LOCKED", `${path} is locked by ${h.owner || h.cert || "another client"} until ${new Date(h.expiresAt).toISOString()}`, {
        details: { path, holder: h.owner || h.cert, expiresAt: h.expiresAt, remainingMs: Math.max(0, h.expiresAt - Date.now()) },
      });
    }
    // Held through another lock service, as the directory last said.
    if (e?.elsewhere) return e.elsewhere;
    const other = e?.granting?.owner || "another client";
    return new DfsError("LOCKED", `${path} is locked: it is being handed to ${other}`, { details: { path, holder: other } });
  }
}
