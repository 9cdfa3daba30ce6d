import type { Database } from "sql.js";
import type { LeaseBody, LeaseInfo, LeaseReply } from "../../protocol/directory.js";
import { DfsError } from "../../protocol/errors.js";
import type { DirRecord } from "./schema.js";
import { metaNumber } from "./schema.js";
import { all, get } from "./sql.js";

/** What a mutation of a path presents: the token of the lease it holds there, and the client's session. */
export interface Credential {
  token?: number;
  session?: string;
}

export interface Lease {
  token: number;
  owner: string;
  session: string;
  expires: number;
}

/**
 * The directory's side of locking: every lease the lock service grants or renews is recorded here (journaled)
 * before its holder learns of it, so the directory can fence every mutation of a leased path. Tokens come from
 * one journaled counter, so they only grow, whatever happens to the lock service; a token the directory never
 * issued is worth nothing.
 */
export class Leases {
  constructor(
    private readonly db: Database,
    private readonly commit: (rec: DirRecord) => { durable: Promise<void> },
  ) {}

  private current(path: string, now: number): Lease | undefined {
    const r = get(this.db, "SELECT token, owner, session, expires FROM leases WHERE path=?", [path]);
    if (!r || Number(r[3]) <= now) return undefined;
    return { token: Number(r[0]), owner: String(r[1]), session: String(r[2]), expires: Number(r[3]) };
  }

  /**
   * Grants (no token) or renews a lease; the reply waits until the record is on disk. Several lock services
   * may grant at once, so a grant is refused while another session's lease runs: this record, not any one lock
   * service, decides who holds a path.
   */
  lease(b: LeaseBody, now = Date.now()): Promise<LeaseReply> {
    const expires = now + b.ttlMs;
    const ask = leaseRequest(b, this.current(b.path, now), now);
    // The same session asking again for a grant replaces its lease: the answer to its earlier one may have been lost.
    const token = ask.token ?? (metaNumber(this.db, "token") ?? 0) + 1;
    const owner = ask.owner;
    const { durable } = this.commit({ op: "lease", path: b.path, token, owner, session: b.session, expires });
    return durable.then(() => ({ token, expiresAt: expires, owner }));
  }

  /**
   * Forgets a lease at once, without waiting for the disk: should the record be lost in a crash, the lease
   * only comes back until it would have expired, fencing the path longer, never less. With a session (a
   * release through a lock service that never saw the grant), only that session may end the lease.
   */
  unlease(path: string, token: number, session?: string): void {
    const r = get(this.db, "SELECT session FROM leases WHERE path=? AND token=?", [path, token]);
    if (r === undefined) {
      if (session === undefined) return;
      throw new DfsError("STALE_TOKEN", `the lock on ${path} with token ${token} is no longer held (lease expired or released)`, {
        details: { path, token },
      });
    }
    if (session !== undefined && String(r[0]) !== session) {
      throw new DfsError("FORBIDDEN", `only the holder of the lock on ${path} may renew or release it`);
    }
    this.commit({ op: "unlease", path, token });
  }

  /** Leases still running, for a lock service that lost its own state in a restart. */
  live(now = Date.now()): LeaseInfo[] {
    return all(this.db, "SELECT path, token, owner, session, expires FROM leases WHERE expires > ?", [now]).map((r) => ({
      path: String(r[0]), token: Number(r[1]), owner: String(r[2]), session: String(r[3]), expiresAt: Number(r[4]),
    }));
  }

  /**
   * Throws unless a mutation of `path` with `cred` is allowed now: while a lease runs, only its holder (its
   * session, with its current token if it names one) may change the path; a token of a lease that ended is stale.
   */
  check(path: string, cred: Credential, now = Date.now()): void {
    fence(path, this.current(path, now), cred);
  }
}

/**
 * Checks a grant (no token) or renewal against the path's live lease `l`: a grant while another session's lease
 * runs is LOCKED (several lock services may grant at once: the lease record, not any one of them, decides who
 * holds a path); a renewal must name the running lease and its session. Returns the token a renewal keeps and
 * the owner to record (a lock service that adopts a lease renews it without knowing who took it).
 */
export function leaseRequest(b: LeaseBody, l: Lease | undefined, now: number): { token?: number; owner: string } {
  if (b.token === undefined) {
    if (l && l.session !== b.session) {
      throw new DfsError("LOCKED", `${b.path} is locked by ${l.owner || "another client"} until ${new Date(l.expires).toISOString()}`, {
        details: { path: b.path, holder: l.owner, expiresAt: l.expires, remainingMs: Math.max(0, l.expires - now) },
      });
    }
    return { owner: b.owner };
  }
  if (!l || l.token !== b.token || l.session !== b.session) {
    throw new DfsError("STALE_TOKEN", `the lease on ${b.path} with token ${b.token} has ended; it cannot be renewed`, {
      details: { path: b.path, token: b.token },
    });
  }
  return { token: b.token, owner: l.owner };
}

/**
 * Throws unless a mutation of `path` presenting `cred` is allowed while `lease` (the path's live lease, if any)
 * runs: only its holder (its session, with its current token if it names one) may change the path; a token of
 * a lease that ended is stale.
 */
export function fence(path: string, l: Lease | undefined, cred: Credential): void {
  if (l) {
    if (cred.session === l.session && (cred.token === undefined || cred.token === l.token)) return;
    const until = new Date(l.expires).toISOString();
    if (cred.token !== undefined) {
      throw new DfsError("STALE_TOKEN", `the lock on ${path} with token ${cred.token} was lost; ${l.owner || "another client"} holds it now (until ${until})`, {
        details: { path, token: cred.token, holder: l.owner, expiresAt: l.expires },
      });
    }
    throw new DfsError("LOCKED", `${path} is locked by ${l.owner || "another client"} until ${until}`, {
      details: { path, holder: l.owner, expiresAt: l.expires },
    });
  }
  if (cred.token !== undefined) {
    throw new DfsError("STALE_TOKEN", `the lock on ${path} with token ${cred.token} is no longer held (its lease ended); nothing was changed`, {
      details: { path, token: cred.token },
    });
  }
}
