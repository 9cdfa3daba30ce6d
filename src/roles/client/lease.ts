import { DfsError, toDfsError } from "../../protocol/errors.js";
import type { LockGrant } from "../../protocol/lock.js";
import type { Logger } from "../../log.js";
import type { Upstream } from "../upstream.js";

const iso = (ms: number) => new Date(ms).toISOString();

/** Margin for the answer's way back: the local end of a lease errs early, never late. */
const REPLY_MARGIN_MS = 250;

/** When a lease ends on this machine's clock, from how long the lock service said it still runs. */
export function localEnd(g: LockGrant): number {
  return Date.now() + g.remainingMs - REPLY_MARGIN_MS;
}

/**
 * A held write lock: renewed in the background until released. Once lost it stays lost, with a reason that
 * says what really happened: the lock service refused a renewal, could not be reached before the lease ended,
 * or this process did not get to renew in time (it was paused or too busy).
 */
export class Lease {
  private timer?: NodeJS.Timeout;
  private _lost?: DfsError;
  private released = false;

  constructor(
    private readonly lock: Upstream,
    readonly path: string,
    readonly token: number,
    private readonly session: string,
    /** On this machine's clock (see localEnd). */
    public expiresAt: number,
    private readonly ttlMs: number,
    private readonly log: Logger,
    private readonly onLost: (lease: Lease) => void = () => {},
  ) {
    this.schedule();
  }

  /** Why the lock is lost, or undefined while it is held. Checks the clock too: a timer may not have run yet. */
  get lost(): DfsError | undefined {
    if (!this._lost && !this.released && Date.now() >= this.expiresAt) {
      this.lose(`its lease ended at ${iso(this.expiresAt)} before this session renewed it (the process was paused or too busy)`);
    }
    return this._lost;
  }

  /** Releases the lock; false when the lock service could not be told (the lease then ends by itself). */
  async release(): Promise<boolean> {
    if (this.released) return true;
    this.released = true;
    clearTimeout(this.timer);
    if (this._lost) return true;
    try {
      await this.lock.request("lock.release", { path: this.path, token: this.token, session: this.session }, { timeoutMs: 5000 });
      return true;
    } catch (err) {
      const e = toDfsError(err);
      this.log.debug("release failed", { path: this.path, err: e.message });
      // Refused as stale: the lease is over already, which is what releasing wanted.
      return e.code === "STALE_TOKEN";
    }
  }

  /** When the lease ends by itself, on this machine's clock. */
  get endsAt(): string {
    return iso(this.expiresAt);
  }

  private lose(why: string): void {
    if (this._lost) return;
    clearTimeout(this.timer);
    this._lost = new DfsError("STALE_TOKEN", `the lock on ${this.path} was lost: ${why}; ${this.path} may have changed since, run \`lock ${this.path}\` to take it again`, {
      details: { path: this.path, token: this.token, lostAt: Date.now() },
    });
    this.log.warn("lock lost", { path: this.path, token: this.token, why });
    // Should the lock service still hold it for this session after all, it must not keep others out.
    void this.lock.request("lock.release", { path: this.path, token: this.token, session: this.session }, { timeoutMs: 5000 }).catch(() => {});
    this.onLost(this);
  }

  private schedule(): void {
    // Renew at a third of the lease, so two renewals may fail before it runs out.
    this.timer = setTimeout(() => void this.renew(), Math.max(50, this.ttlMs / 3));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    if (this.released || this.lost) return;
    try {
      const body = { path: this.path, token: this.token, session: this.session, ttlMs: this.ttlMs };
      const left = this.expiresAt - Date.now();
      const g = await this.lock.request<LockGrant>("lock.renew", body, { timeoutMs: Math.max(100, Math.min(this.ttlMs / 3, left)) });
      if (!this._lost) this.expiresAt = localEnd(g);
    } catch (err) {
      const e = toDfsError(err);
      if (e.code === "STALE_TOKEN" || e.code === "FORBIDDEN") {
        this.lose(`the lock service no longer holds it for this session (${e.message})`);
        return;
      }
      if (Date.now() >= this.expiresAt) {
        this.lose(`it could not be renewed before its lease ended at ${iso(this.expiresAt)} (${e.message})`);
        return;
      }
    }
    if (!this.released && !this._lost) this.schedule();
  }
}
