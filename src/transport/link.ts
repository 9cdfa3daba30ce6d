import { DfsError, toDfsError } from "../protocol/errors.js";
import type { Peer, RequestOptions } from "./actor.js";
import type { Channel } from "./channel.js";
import { connect, type ConnectInit } from "./connect.js";

export interface LinkInit extends ConnectInit {
  url: string;
  /** Runs on every (re)connect before the link counts as up, e.g. to register; a throw drops the connection and retries. */
  onConnect?: (peer: Peer) => Promise<void>;
  onUp?: (peer: Peer) => void;
  onDown?: (err?: DfsError) => void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * A persistent outbound connection: reconnects with exponential backoff and full jitter,
 * re-runs onConnect (registration) on every reconnect, and lets callers wait until it is up.
 */
export class Link {
  private channel?: Channel;
  private waiters: (() => void)[] = [];
  private closed = false;
  private attempt = 0;
  private timer?: NodeJS.Timeout;
  private abort = new AbortController();
  /** Why the last attempt failed, for errors given to callers while the link is down. */
  lastError?: DfsError;
  private everUp = false;

  constructor(private readonly init: LinkInit) {}

  private firstAttempt?: Promise<void>;

  start(): this {
    this.firstAttempt = this.dial();
    return this;
  }

  get up(): Peer | undefined {
    return this.channel && !this.channel.closed ? this.channel : undefined;
  }

  /** Resolves with the connected peer, waiting up to timeoutMs (default 10 s) for the link to come up. */
  async ready(opts: RequestOptions & { failFast?: boolean } = {}): Promise<Peer> {
    // A link that never came up and already failed once is most likely misconfigured: say so now.
    if (opts.failFast && !this.everUp && !this.up) await this.firstAttempt;
    if (opts.failFast && !this.everUp && this.lastError) throw this.lastError;
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    for (;;) {
      const up = this.up;
      if (up) return up;
      if (this.closed) throw new DfsError("UNAVAILABLE", `link to ${this.init.url} is closed`);
      const left = deadline - Date.now();
      if (left <= 0 || opts.signal?.aborted) {
        const cause = this.lastError ? this.lastError.message : `cannot reach ${this.init.what ?? "node"} at ${this.init.url}`;
        throw new DfsError("UNAVAILABLE", cause, { cause: this.lastError });
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  async request<T = unknown>(type: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    const peer = await this.ready(opts);
    return peer.request<T>(type, body, opts);
  }

  async tell(type: string, body: unknown): Promise<void> {
    const peer = this.up;
    if (!peer) throw new DfsError("UNAVAILABLE", `link to ${this.init.url} is down`);
    return peer.tell(type, body);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    clearTimeout(this.timer);
    this.channel?.close();
    for (const w of this.waiters.splice(0)) w();
  }

  private async dial(): Promise<void> {
    if (this.closed) return;
    let ch: Channel | undefined;
    try {
      ch = await connect(this.init.url, { ...this.init, signal: this.abort.signal });
      if (this.init.onConnect) await this.init.onConnect(ch);
    } catch (err) {
      ch?.close();
      this.lastError = toDfsError(err);
      this.init.log.debug("link attempt failed", { url: this.init.url, attempt: this.attempt, err: this.lastError.message });
      this.retry();
      return;
    }
    if (this.closed) return ch.close();
    this.attempt = 0;
    this.lastError = undefined;
    this.everUp = true;
    this.channel = ch;
    this.init.log.info("link up", { url: this.init.url, role: ch.role });
    this.init.onUp?.(ch);
    for (const w of this.waiters.splice(0)) w();
    ch.onClose(() => {
      if (this.channel === ch) this.channel = undefined;
      if (this.closed) return;
      this.init.log.warn("link down", { url: this.init.url });
      this.init.onDown?.();
      this.retry();
    });
  }

  private retry(): void {
    if (this.closed) return;
    const min = this.init.minBackoffMs ?? 100;
    const max = this.init.maxBackoffMs ?? 5000;
    const ceiling = Math.min(max, min * 2 ** Math.min(this.attempt, 16));
    this.attempt++;
    // Full jitter: many nodes restarting together must not reconnect in lockstep.
    this.timer = setTimeout(() => void this.dial(), min / 2 + Math.random() * ceiling);
    this.timer.unref?.();
  }
}
