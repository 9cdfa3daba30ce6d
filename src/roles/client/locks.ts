import { randomBytes } from "node:crypto";
import os from "node:os";
import type { HelloReply } from "../../protocol/directory.js";
import { DfsError, toDfsError } from "../../protocol/errors.js";
import type { LockGrant } from "../../protocol/lock.js";
import type { RequestOptions } from "../../transport/actor.js";
import { Link } from "../../transport/link.js";
import type { TlsMaterial } from "../../transport/tls.js";
import type { Logger } from "../../log.js";
import type { Upstream } from "../upstream.js";
import { Lease, localEnd } from "./lease.js";

export interface LockManagerInit {
  tls: TlsMaterial;
  log: Logger;
  /** Asks the directory where the lock service is now. */
  hello: () => Promise<HelloReply>;
  ttlMs: number;
  /** Told when a lock taken with `lock` is lost, as soon as this client notices. */
  onLost?: (path: string, err: DfsError) => void;
}

/**
 * The client's locks. A lock taken with `lock` is either held or reported lost: once lost, every mutation of
 * its path fails with the reason until `lock` is run again. Requests go to wherever the directory says the
 * lock service is now, so a lock service that came back elsewhere is found again.
 */
export class LockManager implements Upstream {
  /** Random per client process: what the lock service and the directory know this client's leases by. */
  readonly session = randomBytes(18).toString("base64url");
  private readonly explicit = new Map<string, Lease>();
  private readonly lostLocks = new Map<string, DfsError>();
  private link?: Link;
  private url?: string;
  /** The link lost its connection: its lock service may be gone for good, and another one may be up. */
  private dropped = false;

  constructor(private readonly init: LockManagerInit) {}

  /**
   * A request to the lock service. While it cannot be reached, asks the directory again where it is (it may
   * have come back at another address) and retries, until the request's own deadline.
   */
  async request<T = unknown>(type: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
    for (let attempt = 0; ; attempt++) {
      let last: DfsError;
      try {
        const link = await this.service(attempt > 0 || this.dropped);
        const peer = await link.ready({ timeoutMs: Math.min(5000, Math.max(100, deadline - Date.now())), signal: opts.signal });
        return await peer.request<T>(type, body, { ...opts, timeoutMs: Math.max(100, deadline - Date.now()) });
      } catch (err) {
        last = toDfsError(err);
        if (last.code !== "UNAVAILABLE" || Date.now() >= deadline - 100 || opts.signal?.aborted) throw last;
      }
      this.init.log.debug("lock service unreachable, asking the directory again", { url: this.url, err: last.message });
      await new Promise((r) => setTimeout(r, Math.min(1000, 100 * 2 ** attempt)));
    }
  }

  async tell(type: string, body: unknown): Promise<void> {
    await (await this.service(false)).tell(type, body);
  }

  private async service(refresh: boolean): Promise<Link> {
    // A link that is up stays: leaving a lock service ends the leases held through it.
    if (this.link && (!refresh || this.link.up)) return this.link;
    const { lockUrl } = await this.init.hello();
    if (!lockUrl) throw new DfsError("UNAVAILABLE", "no lock service is registered with the directory; start one with `dfs --role lock`");
    if (this.link && lockUrl === this.url) return this.link;
    void this.link?.close();
    this.url = lockUrl;
    this.dropped = false;
    const link: Link = new Link({
      urls: [lockUrl], tls: this.init.tls, log: this.init.log, expectRoles: ["lock", "directory"], what: "lock service",
      onUp: () => {
        if (this.link === link) this.dropped = false;
      },
      onDown: () => {
        if (this.link === link) this.dropped = true;
      },
    }).start();
    this.link = link;
    return link;
  }

  /**
   * Takes the lock on `path`. An explicit lock (the `lock` command) is kept until `unlock`; a write's own
   * lock is the caller's to release.
   */
  async acquire(path: string, opts: { waitMs: number; explicit: boolean }): Promise<Lease> {
    const held = this.explicit.get(path);
    if (held && !held.lost) return held;
    const body = { path, ttlMs: this.init.ttlMs, waitMs: opts.waitMs, owner: lockOwner(), session: this.session };
    const g = await this.request<LockGrant>("lock.acquire", body, { timeoutMs: opts.waitMs + 15_000 });
    const lease = new Lease(this, path, g.token, this.session, localEnd(g), this.init.ttlMs, this.init.log, (l) => this.onLost(l));
    if (opts.explicit) {
      this.explicit.set(path, lease);
      this.lostLocks.delete(path);
    }
    return lease;
  }

  private onLost(lease: Lease): void {
    if (this.explicit.get(lease.path) !== lease) return;
    this.explicit.delete(lease.path);
    this.lostLocks.set(lease.path, lease.lost!);
    this.init.onLost?.(lease.path, lease.lost!);
  }

  /** The explicit lock held on `path`; throws when one was lost and not taken again. */
  held(path: string): Lease | undefined {
    const lease = this.explicit.get(path);
    if (lease?.lost) this.onLost(lease);
    const lost = this.lostLocks.get(path);
    if (lost) throw lost;
    return this.explicit.get(path);
  }

  /** Releases an explicit lock; false when none is held. */
  async unlock(path: string): Promise<boolean> {
    const lost = this.lostLocks.get(path);
    if (lost) throw lost;
    const lease = this.explicit.get(path);
    if (!lease) return false;
    this.explicit.delete(path);
    if (lease.lost) throw lease.lost;
    if (!(await lease.release())) {
      throw new DfsError("UNAVAILABLE", `could not reach the lock service to release the lock on ${path}; its lease ends by itself at ${lease.endsAt}, and others can take it then`);
    }
    return true;
  }

  async close(): Promise<void> {
    for (const lease of this.explicit.values()) await lease.release();
    this.explicit.clear();
    await this.link?.close();
  }
}

let owner: string | undefined;
/** Who holds a lock, as others are told: user@host (looked up once; getpwuid is not free). */
function lockOwner(): string {
  if (owner === undefined) {
    let user = "unknown";
    try {
      user = os.userInfo().username;
    } catch {
      // No passwd entry (e.g. an arbitrary uid in a container): the host name still helps.
    }
    owner = `${user}@${os.hostname()}`;
  }
  return owner;
}
