import { DfsError, toDfsError } from "../../protocol/errors.js";
import type { LockGrant } from "../../protocol/lock.js";
import type { Logger } from "../../log.js";
import type { Upstream } from "../upstream.js";

/** A held write lock: renewed in the background until released; `lost` once a renewal was refused. */
export class Lease {
  private timer?: NodeJS.Timeout;
  private _lost?: DfsError;
  private released = false;

  constructor(
    private readonly lock: Upstream,
    readonly path: string,
    readonly token: number,
    public expiresAt: number,
    private readonly ttlMs: number,
    private readonly log: Logger,
  ) {
    this.schedule();
  }

  get lost(): DfsError | undefined {
    return this._lost;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearTimeout(this.timer);
    if (this._lost) return;
    try {
      await this.lock.request("lock.release", { path: this.path, token: this.token }, { timeoutMs: 5000 });
    } catch (err) {
      // The lock service frees it at lease end anyway; nothing is lost by failing here.
      this.log.debug("release failed", { path: this.path, err: toDfsError(err).message });
    }
  }

  private schedule(): void {
    // Renew at a third of the lease, so two renewals may fail before it runs out.
    this.timer = setTimeout(() => void this.renew(), Math.max(50, this.ttlMs / 3));
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    if (this.released) return;
    try {
      const g = await this.lock.request<LockGrant>("lock.renew", { path: this.path, token: this.token, ttlMs: this.ttlMs }, { timeoutMs: this.ttlMs / 3 });
      this.expiresAt = g.expiresAt;
    } catch (err) {
      const e = toDfsError(err);
      if (e.code === "STALE_TOKEN") {
        this._lost = e;
        this.log.warn("lock lost", { path: this.path, token: this.token });
        return;
      }
      if (Date.now() > this.expiresAt) {
        this._lost = new DfsError("STALE_TOKEN", `the lock on ${this.path} expired while the lock service was unreachable`);
        return;
      }
    }
    if (!this.released) this.schedule();
  }
}
