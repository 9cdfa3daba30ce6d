import { DfsError, toDfsError } from "../protocol/errors.js";
import type { Peer, RequestOptions } from "./actor.js";
import type { Channel } from "./channel.js";
import { connect, type ConnectInit } from "./connect.js";

/**
 * A link's options; its heartbeat defaults to {@link CONTROL_HEARTBEAT}, so that a directory busy for
 * a few seconds is not taken for a dead one.
 */
export interface LinkInit extends ConnectInit {
  /** Addresses of equivalent servers (e.g. several directory processes); the link holds one at a time. */
  urls: readonly string[];
  /** Index into `urls` of the address tried first (default 0), so that many clients can spread over the servers. */
  startAt?: number;
  /** Runs on every (re)connect before the link counts as up, e.g. to register; a throw drops the connection and moves on. */
  onConnect?: (peer: Peer) => Promise<void>;
  onUp?: (peer: Peer) => void;
  onDown?: (err?: DfsError) => void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * A persistent outbound connection to one of several equivalent addresses. When the connection fails (refused,
 * TLS, a registration that throws, a heartbeat timeout, closed) it moves to the next address at once; only after
 * a full round of failures does it wait, with exponential backoff and full jitter. onConnect (registration)
 * runs again on every connection, whichever address it reached. Callers can wait until it is up.
 */
export class Link {
  private channel?: Channel;
  private readonly waiters = new Set<() => void>();
  private closed = false;
  private readonly urls: readonly string[];
  /** The address connected to, or being tried. */
  private index: number;
  /** Failures since the link was last up or the last full round ended; a full round earns a backoff. */
  private failedInRound = 0;
  /** Full rounds of failures in a row: the backoff's exponent. */
  private rounds = 0;
  private timer?: NodeJS.Timeout;
  private abort = new AbortController();
  /** Why the last attempt at each address failed, while none is up. */
  private readonly failures = new Map<string, DfsError>();
  /** Why the link is down, for errors given to callers meanwhile: the last failure of every address. */
  lastError?: DfsError;
  private everUp = false;
  /** Settles once the link was first up, or once its first full round failed. */
  private firstRound?: Promise<void>;
  private endFirstRound?: () => void;
  private firstDone = false;

  constructor(private readonly init: LinkInit) {
    if (init.urls.length === 0) throw new RangeError("a link needs at least one address");
    this.urls = [...init.urls];
    this.index = Math.abs(Math.trunc(init.startAt ?? 0)) % this.urls.length;
  }

  start(): this {
    this.firstRound = new Promise<void>((resolve) => (this.endFirstRound = resolve)).finally(() => (this.firstDone = true));
    void this.dial();
    return this;
  }

  get up(): Peer | undefined {
    return this.channel && !this.channel.closed ? this.channel : undefined;
  }

  /** The address in use, or the one being tried while the link is down. */
  get url(): string {
    return this.urls[this.index]!;
  }

  private get where(): string {
    return this.urls.join(" or ");
  }

  /**
   * Resolves with the connected peer, waiting up to timeoutMs (default 10 s) for the link to come up;
   * then UNAVAILABLE with the last reason, or CANCELLED at once when the signal aborts.
   */
  async ready(opts: RequestOptions & { failFast?: boolean } = {}): Promise<Peer> {
    const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
    const cancelled = () => new DfsError("CANCELLED", `waiting for the link to ${this.where} was cancelled`, { cause: opts.signal?.reason });
    // A link that never came up and whose every address failed is most likely misconfigured: say so now.
    const failFast = opts.failFast && !this.everUp;
    for (;;) {
      const up = this.up;
      if (up) return up;
      if (this.closed) throw new DfsError("UNAVAILABLE", `link to ${this.where} is closed`);
      if (opts.signal?.aborted) throw cancelled();
      if (failFast && this.firstDone && this.lastError) throw this.lastError;
      if (Date.now() >= deadline) {
        const cause = this.lastError ? this.lastError.message : `cannot reach ${this.init.what ?? "node"} at ${this.where}`;
        throw new DfsError("UNAVAILABLE", cause, { cause: this.lastError });
      }
      await this.nap(deadline, opts.signal, failFast && !this.firstDone ? this.firstRound : undefined);
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
    if (!peer) throw new DfsError("UNAVAILABLE", `link to ${this.where} is down`);
    return peer.tell(type, body);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    clearTimeout(this.timer);
    this.channel?.close();
    this.endFirstRound?.();
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
    const url = this.url;
    let ch: Channel | undefined;
    try {
      ch = await connect(url, { ...this.init, signal: this.abort.signal });
      if (this.init.onConnect) await this.init.onConnect(ch);
    } catch (err) {
      ch?.close();
      this.failed(url, toDfsError(err));
      return;
    }
    if (this.closed) return ch.close();
    this.failedInRound = 0;
    this.rounds = 0;
    this.failures.clear();
    this.lastError = undefined;
    this.everUp = true;
    this.channel = ch;
    this.init.log.info("link up", { url, role: ch.role });
    this.init.onUp?.(ch);
    this.endFirstRound?.();
    for (const w of [...this.waiters]) w();
    ch.onClose(() => {
      if (this.channel === ch) this.channel = undefined;
      if (this.closed) return;
      this.init.log.warn("link down", { url });
      this.init.onDown?.();
      this.moveOn();
    });
  }

  private failed(url: string, err: DfsError): void {
    this.failures.set(url, err);
    this.lastError = this.urls.length === 1 ? err : this.combined();
    this.init.log.debug("link attempt failed", { url, round: this.rounds, err: err.message });
    this.moveOn();
  }

  /** One error naming why each address failed, in the order they are tried. */
  private combined(): DfsError {
    const causes = this.urls.flatMap((u) => {
      const e = this.failures.get(u);
      return e ? [e.message] : [];
    });
    const what = this.init.what ?? "node";
    return new DfsError("UNAVAILABLE", `cannot reach the ${what} at any of its ${this.urls.length} addresses: ${causes.join("; ")}`, {
      cause: this.failures.get(this.url),
    });
  }

  /** Tries the next address at once, or, after a full round of failures, waits first. */
  private moveOn(): void {
    if (this.closed) return;
    this.index = (this.index + 1) % this.urls.length;
    this.failedInRound++;
    let delay = 0;
    if (this.failedInRound >= this.urls.length) {
      this.failedInRound = 0;
      if (!this.everUp) this.endFirstRound?.();
      const min = this.init.minBackoffMs ?? 100;
      const max = this.init.maxBackoffMs ?? 5000;
      const ceiling = Math.min(max, min * 2 ** Math.min(this.rounds, 16));
      this.rounds++;
      // Full jitter: many nodes restarting together must not reconnect in lockstep.
      delay = min / 2 + Math.random() * ceiling;
    }
    this.timer = setTimeout(() => void this.dial(), delay);
    this.timer.unref?.();
  }
}
