import type { LeaseBody, LeaseInfo, LeaseReply } from "../../../protocol/directory.js";
import { DfsError } from "../../../protocol/errors.js";
import type { PostgresBackend } from "../../../metadata/postgres.js";
import type { Tx } from "../../../metadata/tx.js";
import { fence, leaseRequest, type Credential, type Lease } from "../leases.js";
import { NOW_MS } from "./nodes.js";

/**
 * Leases as rows: ends on the database's clock, tokens from one sequence (so they only grow, whichever
 * directory process issues them), and every mutation of a path checked against its row in the mutation's
 * own transaction, whichever directory process takes it.
 */
export class PgLeases {
  constructor(private readonly db: PostgresBackend) {}

  /** The path's lease while it runs, as of the database's clock. */
  async current(tx: Tx, path: string): Promise<Lease | undefined> {
    const r = await tx.get(`SELECT token, owner, session, expires FROM leases WHERE path=? AND expires > ${NOW_MS}`, [path]);
    return r ? { token: Number(r[0]), owner: String(r[1]), session: String(r[2]), expires: Number(r[3]) } : undefined;
  }

  /** Throws unless a mutation of `path` with `cred` is allowed now (see {@link fence}). */
  async check(tx: Tx, path: string, cred: Credential): Promise<void> {
    fence(path, await this.current(tx, path), cred);
  }

  /**
   * Grants (no token) or renews a lease. A grant while another session's lease runs is LOCKED: with several
   * lock services, the path may be held through another one.
   */
  lease(b: LeaseBody): Promise<LeaseReply> {
    return this.db.transact(async (tx) => {
      const now = Number((await tx.get(`SELECT ${NOW_MS}`))![0]);
      const ask = leaseRequest(b, await this.current(tx, b.path), now);
      const token = ask.token ?? Number((await tx.get("SELECT nextval('lease_tokens')"))![0]);
      const owner = ask.owner;
      const expires = now + b.ttlMs;
      await tx.run(
        `INSERT INTO leases(path, token, owner, session, expires) VALUES(?,?,?,?,?)
         ON CONFLICT(path) DO UPDATE SET token=excluded.token, owner=excluded.owner, session=excluded.session, expires=excluded.expires`,
        [b.path, token, owner, b.session, expires],
      );
      return { token, expiresAt: expires, owner };
    });
  }

  /** Ends the lease with this token; with a session, only that session's. */
  async unlease(b: { path: string; token: number; session?: string }): Promise<void> {
    await this.db.transact(async (tx) => {
      const r = await tx.get("SELECT session FROM leases WHERE path=? AND token=?", [b.path, b.token]);
      if (!r) {
        if (b.session === undefined) return;
        throw new DfsError("STALE_TOKEN", `the lock on ${b.path} with token ${b.token} is no longer held (lease expired or released)`, {
          details: { path: b.path, token: b.token },
        });
      }
      if (b.session !== undefined && String(r[0]) !== b.session) {
        throw new DfsError("FORBIDDEN", `only the holder of the lock on ${b.path} may renew or release it`);
      }
      await tx.run("DELETE FROM leases WHERE path=? AND token=?", [b.path, b.token]);
    });
  }

  /** Leases still running, for a lock service that (re)registers. */
  async live(tx: Tx): Promise<LeaseInfo[]> {
    const rows = await tx.all(`SELECT path, token, owner, session, expires FROM leases WHERE expires > ${NOW_MS}`);
    return rows.map((r) => ({ path: String(r[0]), token: Number(r[1]), owner: String(r[2]), session: String(r[3]), expiresAt: Number(r[4]) }));
  }
}
