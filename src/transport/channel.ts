import type { WebSocket } from "ws";
import { DfsError, toDfsError } from "../protocol/errors.js";
import type { Logger } from "../log.js";
import type { Peer, RequestOptions, Router } from "./actor.js";
import { decode, encode, encodeParts, Kind, type Envelope } from "./codec.js";

export interface ChannelInit {
  socket: WebSocket;
  role: string;
  name: string;
  remote: string;
  /** Serves the peer's requests and tells; without it, they are answered BAD_REQUEST. */
  router?: Router;
  log: Logger;
  /** Ping period; a peer that has not answered by the next ping is declared dead. Default 5 s. */
  heartbeatMs?: number;
  /** Bytes handed to the socket but not yet written, past which senders wait. Default 8 MiB. */
  highWaterBytes?: number;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
  signal?: AbortSignal;
  onAbort?: () => void;
}

const DEFAULT_TIMEOUT_MS = 30_000;
let nextPeerId = 1;

/** Request/reply and one-way messages over one WebSocket, with heartbeat and backpressure. */
export class Channel implements Peer {
  readonly id = nextPeerId++;
  readonly role: string;
  readonly name: string;
  readonly remote: string;
  private readonly ws: WebSocket;
  private readonly pending = new Map<number, Pending>();
  private readonly closeCallbacks: (() => void)[] = [];
  private readonly drainWaiters: (() => void)[] = [];
  private readonly highWater: number;
  private nextId = 1;
  private buffered = 0;
  private alive = true;
  private heartbeat?: NodeJS.Timeout;
  private _closed = false;

  constructor(private readonly init: ChannelInit) {
    this.ws = init.socket;
    this.role = init.role;
    this.name = init.name;
    this.remote = init.remote;
    this.highWater = init.highWaterBytes ?? 8 * 1024 * 1024;
    this.ws.on("message", (data: Buffer, isBinary: boolean) => this.onFrame(data, isBinary));
    this.ws.on("pong", () => (this.alive = true));
    this.ws.on("close", () => this.onClosed());
    this.ws.on("error", (err) => init.log.debug("socket error", { peer: this.remote, err }));
    const every = init.heartbeatMs ?? 5000;
    this.heartbeat = setInterval(() => this.beat(), every);
    this.heartbeat.unref();
  }

  get closed(): boolean {
    return this._closed;
  }

  request<T = unknown>(type: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    // Created here so that its stack points at the caller, not at a timer.
    const timeoutError = new DfsError("TIMEOUT", `${type} to ${this.remote} got no answer in time`);
    if (this._closed) return Promise.reject(this.closedError());
    if (opts.signal?.aborted) return Promise.reject(abortError(opts.signal));
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffff_fffe ? 1 : this.nextId + 1;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(id)?.reject(timeoutError), opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      const p: Pending = { resolve: resolve as (v: unknown) => void, reject, timer, signal: opts.signal };
      if (opts.signal) {
        p.onAbort = () => this.settle(id)?.reject(abortError(opts.signal!));
        opts.signal.addEventListener("abort", p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.send(encodeParts({ kind: Kind.Request, id, type, body })).catch((err) => this.settle(id)?.reject(err));
    });
  }

  tell(type: string, body: unknown): Promise<void> {
    return this.send(encode({ kind: Kind.Tell, type, body }));
  }

  onClose(cb: () => void): void {
    if (this._closed) queueMicrotask(cb);
    else this.closeCallbacks.push(cb);
  }

  close(): void {
    if (this._closed) return;
    this.ws.close(1000);
    // A peer that never completes the closing handshake must not keep us waiting.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  /** Drops the connection at once, as a dead network would. */
  terminate(): void {
    this.ws.terminate();
  }

  /** Sends a message, waiting first while too many bytes are still queued on the socket. */
  private async send(frame: Buffer | [Buffer, Uint8Array]): Promise<void> {
    while (this.buffered > this.highWater && !this._closed) {
      await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
    }
    if (this._closed) throw this.closedError();
    const size = Array.isArray(frame) ? frame[0].length + frame[1].length : frame.length;
    this.buffered += size;
    const done = () => {
      this.buffered -= size;
      if (this.buffered <= this.highWater / 2) for (const w of this.drainWaiters.splice(0)) w();
    };
    if (Array.isArray(frame)) {
      // Two fragments of one message, queued back to back so that nothing can come between them.
      this.ws.send(frame[0], { binary: true, fin: false });
      this.ws.send(frame[1], { binary: true, fin: true }, done);
    } else {
      this.ws.send(frame, { binary: true }, done);
    }
  }

  private onFrame(data: Buffer, isBinary: boolean): void {
    this.alive = true;
    let env: Envelope;
    try {
      if (!isBinary) throw new DfsError("BAD_REQUEST", "text frames are not accepted");
      env = decode(data);
    } catch (err) {
      const e = toDfsError(err);
      const id = typeof e.details?.id === "number" ? e.details.id : 0;
      this.init.log.debug("bad frame", { peer: this.remote, err: e.message });
      void this.send(encode({ kind: Kind.Error, id, error: new DfsError("BAD_REQUEST", e.message) })).catch(() => {});
      return;
    }
    switch (env.kind) {
      case Kind.Reply:
        this.settle(env.id)?.resolve(env.body);
        return;
      case Kind.Error:
        this.settle(env.id)?.reject(env.error);
        return;
      case Kind.Request:
        this.serve(env.id, env.type, env.body);
        return;
      case Kind.Tell:
        this.route(env.type, env.body).catch((err) =>
          this.init.log.debug("tell failed", { peer: this.remote, type: env.type, err: toDfsError(err).message }),
        );
        return;
    }
  }

  private serve(id: number, type: string, body: unknown): void {
    this.route(type, body).then(
      (reply) => this.send(encodeParts({ kind: Kind.Reply, id, body: reply ?? null })),
      (err) => this.send(encode({ kind: Kind.Error, id, error: toDfsError(err) })),
    ).catch(() => {
      // The connection went away before the answer could be sent; nobody is left to tell.
    });
  }

  private route(type: string, body: unknown): Promise<unknown> {
    if (!this.init.router) return Promise.reject(new DfsError("BAD_REQUEST", "this connection accepts no requests"));
    return this.init.router.dispatch(type, body, this);
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (p.onAbort) p.signal?.removeEventListener("abort", p.onAbort);
    return p;
  }

  private beat(): void {
    if (!this.alive) {
      this.init.log.warn("peer missed heartbeat", { peer: this.remote, role: this.role });
      this.ws.terminate();
      return;
    }
    this.alive = false;
    try {
      this.ws.ping();
    } catch {
      // Closing already; the close event does the rest.
    }
  }

  private onClosed(): void {
    if (this._closed) return;
    this._closed = true;
    clearInterval(this.heartbeat);
    for (const id of [...this.pending.keys()]) this.settle(id)?.reject(this.closedError());
    for (const w of this.drainWaiters.splice(0)) w();
    for (const cb of this.closeCallbacks.splice(0)) {
      try {
        cb();
      } catch (err) {
        this.init.log.error("close callback failed", { err });
      }
    }
    this.init.router?.peerClosed(this);
  }

  private closedError(): DfsError {
    return new DfsError("UNAVAILABLE", `connection to ${this.remote} closed`);
  }
}

function abortError(signal: AbortSignal): DfsError {
  return new DfsError("TIMEOUT", "request aborted", { cause: signal.reason });
}
