import { DfsError, toDfsError } from "../protocol/errors.js";
import type { Peer, RequestOptions } from "./actor.js";
import type { Channel } from "./channel.js";
import { connect, type ConnectInit } from "./connect.js";

/**
 * A link's options; its heartbeat defaults to {@link CONTROL_HEARTBEAT}, so that a directory busy for
 * a few seconds is not taken for a dead one.
 */
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
  private readonly waiters = new Set<() => void>();
  private closed = false;
  private attempt = 0;
  private timer?: NodeJS.Timeout;
  private abort = new AbortController();
  /** Why the last attempt failed, for errors given to callers while the link is down. */
  lastError?: DfsError;
  private everUp = false;

  constructor(private readonly init: LinkInit) {}

  private firstAttempt?: Promise<void>;
  private firstDone = false;

  start(): this {
    this.firstAttempt = this.dial().finally(() => (this.firstDone = true));
    return this;
  }

  get up(): Peer | undefined {
    return this.channel && !this.channel.closed ? this.channel : undefined;
  }

  /**
   * Resolves with the connected peer, waiting up to timeoutMs (default 10 s) for the link to come up;
   * then UNAVAILABLE with the last reason, or CANCELLED at once when the signal aborts.
   */
  async ready(opts: RequestOptions & { failFast?: boolean } = {}): Promise<Peer> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    const cancelled = new DfsError("CANCELLED", `waiting for the link to ${this.init.url} was cancelled`, { cause: opts.signal?.reason });
    // A link that never came up and whose first attempt failed is most likely misconfigured: say so now.
    const failFast = opts.failFast && !this.everUp;
    for (;;) {
      const up = this.up;
      if (up) return up;
      if (this.closed) throw new DfsError("UNAVAILABLE", `link to ${this.init.url} is closed`);
      if (opts.signal?.aborted) throw cancelled;
      if (failFast && this.firstDone && this.lastError) throw this.lastError;
      if (Date.now() >= deadline) {
        const cause = this.lastError ? this.lastError.message : `cannot reach ${this.init.what ?? "node"} at ${this.init.url}`;
        throw new DfsError("UNAVAILABLE", cause, { cause: this.lastError });
      }
      await this.nap(deadline, opts.signal, failFast && !this.firstDone ? this.firstAttempt : undefined);
    }
  }

  /** Sends a request once the link is up; waiting for it and the answer share one deadline. */
  async request<T = unknown>(type: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    const started = Date.now();
    const peer = await this.ready(opts);
    const timeoutMs = opts.timeoutMs === undefined ? undefined : Math.max(1, opts.timeoutMs - (Date.now() - started));
    return peer.request<T>(type, body, { ...opts, timeoutMs });
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
    for (const w of [...this.waiters]) w();
  }

  /** Waits until the link changes, the deadline, an abort, or `also` settles; at most a second. */
  private nap(deadline: number, signal?: AbortSignal, also?: Promise<unknown>): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(t);
        signal?.removeEventListener("abort", wake);
        this.waiters.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, Math.max(0, Math.min(deadline - Date.now(), 1000)));
      signal?.addEventListener("abort", wake, { once: true });
      this.waiters.add(wake);
      also?.then(wake, wake);
    });
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
    for (const w of [...this.waiters]) w();
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
