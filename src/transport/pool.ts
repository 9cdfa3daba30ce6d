import { DfsError } from "../protocol/errors.js";
import type { Peer, RequestOptions } from "./actor.js";
import type { Channel } from "./channel.js";
import { connect, type ConnectInit } from "./connect.js";
import { DATA_HEARTBEAT } from "./heartbeat.js";

export interface PoolInit extends ConnectInit {
  /** Bound on opening a connection, whatever a request's own timeout; default 5 s. */
  timeoutMs?: number;
}

/**
 * Connections to many nodes by URL, opened on first use and reopened after a close. They carry
 * chunks, so their heartbeat defaults to {@link DATA_HEARTBEAT}: a frozen node fails its requests
 * UNAVAILABLE within seconds instead of holding them for their whole timeout.
 */
export class Pool {
  private readonly conns = new Map<string, Promise<Channel>>();
  /** Connections that are up, so that a request on one needs no promise or timer of its own to find it. */
  private readonly up = new Map<string, Channel>();
  private readonly abort = new AbortController();
  private closed = false;

  constructor(private readonly init: PoolInit) {}

  /**
   * The connection to `url`, opening it if needed. Callers share one attempt; each one's own
   * signal and timeout end only its own wait (CANCELLED, TIMEOUT), not the attempt.
   */
  async get(url: string, opts: RequestOptions = {}): Promise<Peer> {
    if (this.closed) throw new DfsError("UNAVAILABLE", `connection pool is closed; cannot reach ${url}`);
    const up = this.up.get(url);
    if (up && !up.closed) return up;
    const deadline = opts.timeoutMs === undefined ? undefined : Date.now() + opts.timeoutMs;
    const p = this.conns.get(url) ?? this.open(url);
    const ch = await waitFor(p, url, opts.signal, deadline);
    if (!ch.closed) return ch;
    // It closed between opening and now: one fresh attempt.
    if (this.conns.get(url) === p) this.conns.delete(url);
    return waitFor(this.conns.get(url) ?? this.open(url), url, opts.signal, deadline);
  }

  async request<T = unknown>(url: string, type: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    const started = Date.now();
    const peer = await this.get(url, opts);
    const timeoutMs = opts.timeoutMs === undefined ? undefined : Math.max(1, opts.timeoutMs - (Date.now() - started));
    return peer.request<T>(type, body, { ...opts, timeoutMs });
  }

  private open(url: string): Promise<Channel> {
    const p = connect(url, { heartbeat: DATA_HEARTBEAT, ...this.init, timeoutMs: this.init.timeoutMs ?? 5000, signal: this.abort.signal });
    this.conns.set(url, p);
    p.then(
      (ch) => {
        if (this.closed) ch.close();
        else this.up.set(url, ch);
        ch.onClose(() => {
          if (this.conns.get(url) === p) this.conns.delete(url);
          if (this.up.get(url) === ch) this.up.delete(url);
        });
      },
      () => {
        if (this.conns.get(url) === p) this.conns.delete(url);
      },
    );
    return p;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    const all = [...this.conns.values()];
    this.conns.clear();
    this.up.clear();
    await Promise.all(all.map((p) => p.then((ch) => ch.close(), () => {})));
  }
}

/** Waits for a shared connection attempt, giving up on this caller's signal or deadline only. */
function waitFor(p: Promise<Channel>, url: string, signal: AbortSignal | undefined, deadline: number | undefined): Promise<Channel> {
  if (!signal && deadline === undefined) return p;
  return new Promise<Channel>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      done();
      reject(new DfsError("CANCELLED", `connecting to ${url} was cancelled`, { cause: signal?.reason }));
    };
    const timer = deadline === undefined ? undefined : setTimeout(() => {
      done();
      reject(new DfsError("TIMEOUT", `no connection to ${url} before the request's deadline`));
    }, Math.max(0, deadline - Date.now()));
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    p.then((ch) => (done(), resolve(ch)), (err) => (done(), reject(err)));
  });
}
