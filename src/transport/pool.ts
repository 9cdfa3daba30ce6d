import type { Peer, RequestOptions } from "./actor.js";
import type { Channel } from "./channel.js";
import { connect, type ConnectInit } from "./connect.js";

/** Connections to many nodes by URL, opened on first use and reopened after a close. */
export class Pool {
  private readonly conns = new Map<string, Promise<Channel>>();
  private closed = false;

  constructor(private readonly init: ConnectInit) {}

  get(url: string, opts: RequestOptions = {}): Promise<Peer> {
    const existing = this.conns.get(url);
    if (existing) return existing.then((ch) => (ch.closed ? this.open(url, opts) : ch));
    return this.open(url, opts);
  }

  async request<T = unknown>(url: string, type: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    const peer = await this.get(url, opts);
    return peer.request<T>(type, body, opts);
  }

  private open(url: string, opts: RequestOptions): Promise<Channel> {
    const p = connect(url, { ...this.init, timeoutMs: opts.timeoutMs ?? this.init.timeoutMs, signal: opts.signal });
    this.conns.set(url, p);
    p.then(
      (ch) => {
        if (this.closed) ch.close();
        ch.onClose(() => {
          if (this.conns.get(url) === p) this.conns.delete(url);
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
    const all = [...this.conns.values()];
    this.conns.clear();
    await Promise.all(all.map((p) => p.then((ch) => ch.close(), () => {})));
  }
}
