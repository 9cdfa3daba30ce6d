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
  /** Absent for a lease restored from the directory after a restart, until its holder renews it. */
  peer?: Peer;
  expiresAt: number;
  timer: NodeJS.Timeout;
}

interface Waiter extends Claimant {
  deadline: number;
  resolve: (g: LockGrant) => void;
  reject: (e: DfsError) => void;
  timer: NodeJS.Timeout;
}

/** One path's lock: at most one holder, or one grant under way, and a FIFO of waiters. */
interface Entry {
  holder?: Holder;
  granting?: Claimant;
  waiters: Waiter[];
}

const LEASE_TIMEOUT_MS = 15_000;
const UNLEASE_TIMEOUT_MS = 3_000;
const UNLEASE_RETRY_MS = 2_000;

/**
 * The lock table. Every change is decided synchronously inside the serial mailbox; a grant reserves the path
 * (`granting`) before it asks the directory to record the lease, so that nothing can take the path meanwhile,
 * and the holder is known only once the directory answered with the token.
 */
export class LockTable {
  private readonly entries = new Map<string, Entry>();
  /** Leases that ended here but that the directory has not yet been told of (it was unreachable): path -> token. */
  private readonly ending = new Map<string, number>();
  private retrying?: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly c: { log: Logger; directory: Upstream }) {}

  acquire(path: string, who: Claimant, waitMs: number): LockGrant | Promise<LockGrant> {
    const e = this.entries.get(path);
    const h = e?.holder;
    // The holder asking again (its earlier answer was lost with its connection) gets its lease back, renewed:
    // it counts the lease from now.
    if (h && h.session === who.session && (h.cert === "" || h.cert === who.peer.name)) return this.renew(path, h.token, who);
    if (!e || (!e.holder && !e.granting)) {
      const entry = e ?? { waiters: [] };
      this.entries.set(path, entry);
      return this.grant(path, entry, who);
    }
    if (waitMs === 0) throw this.lockedError(path, e);
    return new Promise<LockGrant>((resolve, reject) => {
      const w: Waiter = {
        ...who, deadline: Date.now() + waitMs, resolve, reject,
        timer: setTimeout(() => {
          const q = this.entries.get(path)?.waiters;
          const i = q ? q.indexOf(w) : -1;
          if (i >= 0) q!.splice(i, 1);
          reject(this.lockedError(path, this.entries.get(path)));
        }, waitMs),
      };
      e.waiters.push(w);
    });
  }

  /** Renews a lease for its holder (same certificate and session); the directory records the new end first. */
  async renew(path: string, token: number, who: Claimant): Promise<LockGrant> {
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

  /** Releases a lease for its holder; resolves once the directory forgot it, so the next command sees the path free. */
  release(path: string, token: number, who: Claimant): Promise<void> {
    this.holderFor(path, token, who);
    return this.free(path, true);
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
   * Takes the directory's view after (re)registering: leases it holds that this table lacks are restored
   * (their holders renew them by session), and local holders the directory does not know are gone.
   */
  restore(all: LeaseInfo[], directoryNow: number): void {
    // A lease this table already let go of stays gone: the directory is told again instead.
    const leases = all.filter((l) => this.ending.get(l.path) !== l.token);
    for (const [path, token] of this.ending) void this.unlease(path, token);
    const byPath = new Map(leases.map((l) => [l.path, l]));
    for (const [path, e] of this.entries) {
      if (e.holder && byPath.get(path)?.token !== e.holder.token) {
        this.c.log.warn("lease unknown to the directory, dropped", { path, token: e.holder.token });
        void this.free(path, false);
      }
    }
    for (const l of leases) {
      const e = this.entries.get(l.path) ?? { waiters: [] };
      this.entries.set(l.path, e);
      if (e.holder?.token === l.token || e.granting) continue;
      const h: Holder = { token: l.token, session: l.session, cert: "", owner: l.owner, expiresAt: 0, timer: undefined as unknown as NodeJS.Timeout };
      e.holder = h;
      this.arm(l.path, h, Date.now() + (l.expiresAt - directoryNow));
      this.c.log.info("lease restored", { path: l.path, token: l.token });
    }
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retrying);
    for (const e of this.entries.values()) {
      if (e.holder) clearTimeout(e.holder.timer);
      for (const w of e.waiters) clearTimeout(w.timer);
    }
  }

  private grant(path: string, entry: Entry, who: Claimant): Promise<LockGrant> {
    entry.granting = who;
    const sent = Date.now();
    const body = { path, owner: who.owner, session: who.session, ttlMs: who.ttlMs };
    return this.c.directory.request<LeaseReply>("dir.lease", body, { timeoutMs: LEASE_TIMEOUT_MS }).then(
      (reply) => {
        if (this.entries.get(path) !== entry || entry.granting !== who) {
          void this.unlease(path, reply.token);
          throw new DfsError("UNAVAILABLE", `the lock service lost track of ${path} while granting it; try again`);
        }
        entry.granting = undefined;
        this.ending.delete(path); // the new lease replaced whatever the directory still had
        const h: Holder = {
          token: reply.token, session: who.session, cert: who.peer.name, owner: who.owner, peer: who.peer,
          expiresAt: 0, timer: undefined as unknown as NodeJS.Timeout,
        };
        entry.holder = h;
        // Timed from before the request: this table lets go no later than the directory does.
        this.arm(path, h, sent + who.ttlMs);
        this.c.log.debug("granted", { path, token: h.token, holder: who.owner || who.peer.name });
        if (who.peer.closed) void this.free(path, true);
        return { path, token: h.token, expiresAt: reply.expiresAt, remainingMs: Math.max(0, h.expiresAt - Date.now()) };
      },
      (err) => {
        if (entry.granting === who) entry.granting = undefined;
        this.next(path);
        throw toDfsError(err);
      },
    );
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
    if (!e || e.holder || e.granting) return;
    while (e.waiters.length > 0) {
      const w = e.waiters.shift()!;
      clearTimeout(w.timer);
      if (w.peer.closed) continue;
      if (Date.now() > w.deadline) {
        w.reject(this.lockedError(path, e));
        continue;
      }
      this.grant(path, e, w).then(w.resolve, w.reject);
      return;
    }
    this.entries.delete(path);
  }

  private holderFor(path: string, token: number, who: Claimant): Holder {
    const h = this.entries.get(path)?.holder;
    if (!h || h.token !== token) throw this.staleError(path, token);
    if (h.session !== who.session || (h.cert !== "" && h.cert !== who.peer.name)) {
      throw new DfsError("FORBIDDEN", `only the holder of the lock on ${path} may renew or release it`);
    }
    if (h.cert === "") h.cert = who.peer.name; // restored lease: bound to the first certificate its session shows
    return h;
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
        details: { path, holder: h.owner || h.cert, expiresAt: h.expiresAt },
      });
    }
    const other = e?.granting?.owner || "another client";
    return new DfsError("LOCKED", `${path} is locked: it is being handed to ${other}`, { details: { path, holder: other } });
  }
}
