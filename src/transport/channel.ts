import type { WebSocket } from "ws";
import { DfsError, toDfsError } from "../protocol/errors.js";
import type { Logger } from "../log.js";
import type { Peer, RequestOptions, Router } from "./actor.js";
import { decode, encode, encodeParts, Kind, type Envelope } from "./codec.js";
import { CONTROL_HEARTBEAT, Heartbeat, type HeartbeatOptions } from "./heartbeat.js";
import { Inflight, type InflightLimits, type Ticket } from "./inflight.js";
import { traffic } from "./traffic.js";

export interface ChannelInit {
  socket: WebSocket;
  /** The TLS socket under it: bytes arriving there prove the peer alive even while a large frame is still incomplete. */
  stream?: { on(event: "data", listener: () => void): unknown };
  role: string;
  name: string;
  remote: string;
  /** Serves the peer's requests and tells; without it, they are answered BAD_REQUEST. */
  router?: Router;
  log: Logger;
  /** Default {@link CONTROL_HEARTBEAT}. */
  heartbeat?: HeartbeatOptions;
  /** Work the peer may have in flight with us before we stop reading its socket. */
  inflight?: InflightLimits;
  /** Bytes handed to the socket but not yet written, past which senders wait. Default 8 MiB. */
  highWaterBytes?: number;
}

/** What the peer has in flight with us right now, for status pages and tests. */
export interface ChannelLoad {
  /** Requests and tells of the peer's that we have not answered yet. */
  requests: number;
  /** Their bytes, with the answers not yet written. */
  bytes: number;
  /** Whether we stopped reading the peer's socket. */
  paused: boolean;
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  timer: NodeJS.Timeout;
  signal?: AbortSignal;
  onAbort?: () => void;
}

type Frame = Buffer | [Buffer, Uint8Array];

const DEFAULT_TIMEOUT_MS = 30_000;
let nextPeerId = 1;

/** Request/reply and one-way messages over one WebSocket, with heartbeat and backpressure both ways. */
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
  private readonly heartbeat: Heartbeat;
  private readonly inflight: Inflight;
  private nextId = 1;
  private buffered = 0;
  private written = 0;
  private _closed = false;

  constructor(private readonly init: ChannelInit) {
    this.ws = init.socket;
    this.role = init.role;
    this.name = init.name;
    this.remote = init.remote;
    this.highWater = init.highWaterBytes ?? 8 * 1024 * 1024;
    this.inflight = new Inflight(this.ws, init.inflight);
    const channel = this;
    this.heartbeat = new Heartbeat({
      ping: () => this.ping(),
      get readsPaused() {
        return channel.inflight.paused;
      },
      get writesPending() {
        return channel.buffered > 0;
      },
      get framesWritten() {
        return channel.written;
      },
      dead: (missed) => {
        init.log.warn("peer missed heartbeats", { peer: this.remote, role: this.role, missed });
        this.ws.terminate();
      },
    }, init.heartbeat ?? CONTROL_HEARTBEAT);
    const alive = () => this.heartbeat.alive();
    init.stream?.on("data", alive);
    this.ws.on("message", (data: Buffer, isBinary: boolean) => {
      alive();
      this.onFrame(data, isBinary);
    });
    this.ws.on("ping", alive);
    this.ws.on("pong", alive);
    this.ws.on("close", () => this.onClosed());
    this.ws.on("error", (err) => init.log.debug("socket error", { peer: this.remote, err }));
    this.heartbeat.start();
  }

  get closed(): boolean {
    return this._closed;
  }

  get load(): ChannelLoad {
    return this.inflight.load;
  }

  request<T = unknown>(type: string, body: unknown, opts: RequestOptions = {}): Promise<T> {
    // Made only when needed: capturing a stack for every request showed up in profiles of small writes.
    const timeoutError = () => new DfsError("TIMEOUT", `${type} to ${this.remote} got no answer in time`);
    const signal = opts.signal;
    const cancelled = () => new DfsError("CANCELLED", `${type} to ${this.remote} was cancelled`, { cause: signal?.reason });
    if (this._closed) return Promise.reject(this.closedError());
    if (signal?.aborted) return Promise.reject(cancelled());
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffff_fffe ? 1 : this.nextId + 1;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(id)?.reject(timeoutError()), opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
      const p: Pending = { resolve: resolve as (v: unknown) => void, reject, timer, signal };
      if (signal) {
        p.onAbort = () => this.settle(id)?.reject(cancelled());
        signal.addEventListener("abort", p.onAbort, { once: true });
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

  /**
   * Sends a message, waiting first while too many bytes are still queued on the socket.
   * `written` runs once the socket took the frame, or once it never will.
   */
  private async send(frame: Frame, written?: () => void): Promise<void> {
    try {
      while (this.buffered > this.highWater && !this._closed) {
        await new Promise<void>((resolve) => this.drainWaiters.push(resolve));
      }
      if (this._closed) throw this.closedError();
    } catch (err) {
      written?.();
      throw err;
    }
    const size = Array.isArray(frame) ? frame[0].length + frame[1].length : frame.length;
    this.buffered += size;
    traffic.bytesOut += size;
    traffic.framesOut++;
    const done = (err?: Error) => {
      this.buffered -= size;
      if (!err) this.written++;
      if (this.buffered <= this.highWater / 2) for (const w of this.drainWaiters.splice(0)) w();
      written?.();
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
    traffic.bytesIn += data.length;
    traffic.framesIn++;
    let env: Envelope;
    try {
      if (!isBinary) throw new DfsError("BAD_REQUEST", "text frames are not accepted");
      env = decode(data);
    } catch (err) {
      const e = toDfsError(err);
      const id = typeof e.details?.id === "number" ? e.details.id : 0;
      this.init.log.debug("bad frame", { peer: this.remote, err: e.message });
      this.answer(this.inflight.hold(data.length), { kind: Kind.Error, id, error: new DfsError("BAD_REQUEST", e.message) });
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
        this.serve(env.id, env.type, env.body, this.inflight.hold(data.length));
        return;
      case Kind.Tell: {
        const ticket = this.inflight.hold(data.length);
        this.route(env.type, env.body)
          .catch((err) => this.init.log.debug("tell failed", { peer: this.remote, type: env.type, err: toDfsError(err).message }))
          .finally(() => ticket.release());
        return;
      }
    }
  }

  /** Answers a request; it counts as in flight until the answer is written. */
  private serve(id: number, type: string, body: unknown, ticket: Ticket): void {
    this.route(type, body).then(
      (reply) => this.answer(ticket, { kind: Kind.Reply, id, body: reply ?? null }),
      (err) => this.answer(ticket, { kind: Kind.Error, id, error: toDfsError(err) }),
    );
  }

  private answer(ticket: Ticket, env: Envelope): void {
    let frame: Frame;
    try {
      frame = encodeParts(env);
    } catch (err) {
      this.init.log.error("reply cannot be encoded", { peer: this.remote, err });
      frame = encode({ kind: Kind.Error, id: "id" in env ? env.id : 0, error: new DfsError("INTERNAL", "reply cannot be encoded") });
    }
    ticket.grow(Array.isArray(frame) ? frame[0].length + frame[1].length : frame.length);
    this.send(frame, () => ticket.release()).catch(() => {
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

  private ping(): void {
    try {
      this.ws.ping();
    } catch {
      // Closing already; the close event does the rest.
    }
  }

  private onClosed(): void {
    if (this._closed) return;
    this._closed = true;
    this.heartbeat.stop();
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
