import { DfsError } from "../protocol/errors.js";
import { Mailbox } from "./mailbox.js";

export interface RequestOptions {
  /** Default 30 s; past it the request fails TIMEOUT. */
  timeoutMs?: number;
  /** Aborting fails the request CANCELLED at once. */
  signal?: AbortSignal;
}

/** The other end of a connection, as roles see it: no socket, only messages and the peer's certificate identity. */
export interface Peer {
  /** Unique within this process. */
  readonly id: number;
  /** From the certificate's OU: directory, lock, storage or client. */
  readonly role: string;
  /** From the certificate's CN. */
  readonly name: string;
  readonly remote: string;
  readonly closed: boolean;
  request<T = unknown>(type: string, body: unknown, opts?: RequestOptions): Promise<T>;
  /** One-way message; resolves once handed to the socket's buffer (waits while it is full). */
  tell(type: string, body: unknown): Promise<void>;
  /** Runs once when the connection ends, for whatever reason. */
  onClose(cb: () => void): void;
  close(): void;
}

export interface Handler<B = any> {
  /** Certificate roles allowed to send this message. */
  allow: readonly string[];
  /** Checks the body's shape at the edge; throws BAD_REQUEST. */
  parse: (body: unknown) => B;
  handle: (body: B, peer: Peer) => unknown;
}

export interface ActorInit {
  name: string;
  /** Message types this actor owns start with it, e.g. "dir.". */
  prefix: string;
  concurrency: number;
  /** Messages held beyond the running ones (queued, or awaiting a deferred reply); default 10,000. */
  capacity?: number;
  /**
   * Most messages one connection may have held at once; beyond it that connection is answered BUSY
   * while others are still served. Default: half of concurrency + capacity, but at least 64 (or all
   * of a smaller mailbox).
   */
  peerCapacity?: number;
  handlers: Record<string, Handler>;
  /** Delivered through the mailbox, so serial actors see it in order with messages. */
  onPeerClose?: (peer: Peer) => void;
}

interface Msg {
  handler: Handler;
  body: unknown;
  peer: Peer;
}

/**
 * A body whose check took longer than this is handled in a later turn of the event loop: checking and
 * applying a large message (a 1,000-file commit) in one stop would hold back pongs and reads for both.
 */
const SPLIT_MS = 5;

interface Waiting {
  msg: Msg;
  sender: number | undefined;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** A role's message handlers behind one mailbox: checks type, permission and shape before queueing. */
export class Actor {
  private readonly mailbox: Mailbox<Msg>;
  /** Messages checked but not yet posted; while any wait, later ones wait behind them, in order. */
  private readonly waiting: Waiting[] = [];

  constructor(readonly init: ActorInit) {
    const capacity = init.capacity ?? 10_000;
    const total = init.concurrency + capacity;
    this.mailbox = new Mailbox<Msg>({
      concurrency: init.concurrency,
      capacity,
      senderCapacity: init.peerCapacity ?? Math.min(total, Math.max(64, Math.ceil(total / 2))),
      handle: (m) => m.handler.handle(m.body, m.peer),
    });
  }

  post(type: string, body: unknown, peer: Peer): Promise<unknown> {
    const handler = Object.hasOwn(this.init.handlers, type) ? this.init.handlers[type] : undefined;
    if (!handler) return Promise.reject(new DfsError("BAD_REQUEST", `unknown message type ${JSON.stringify(type)}`));
    if (!handler.allow.includes(peer.role)) {
      return Promise.reject(new DfsError("FORBIDDEN", `a ${peer.role} certificate may not send ${type}`));
    }
    let parsed: unknown;
    const started = performance.now();
    try {
      parsed = handler.parse(body);
    } catch (err) {
      return Promise.reject(err instanceof DfsError ? err : new DfsError("BAD_REQUEST", `bad ${type} body`, { cause: err }));
    }
    const msg = { handler, body: parsed, peer };
    if (this.waiting.length === 0 && performance.now() - started < SPLIT_MS) return this.mailbox.post(msg, peer.id);
    return this.postLater(msg, peer.id);
  }

  private postLater(msg: Msg, sender: number | undefined): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.waiting.push({ msg, sender, resolve, reject }) > 1) return;
      setImmediate(() => {
        // Posted in arrival order; the first is handled now, in this turn, not in the one that checked it.
        for (const w of this.waiting.splice(0)) this.mailbox.post(w.msg, w.sender).then(w.resolve, w.reject);
      });
    });
  }

  peerClosed(peer: Peer): void {
    const cb = this.init.onPeerClose;
    if (!cb) return;
    const handler: Handler = { allow: [], parse: (b) => b, handle: () => cb(peer) };
    const msg = { handler, body: undefined, peer };
    // A full mailbox must not lose a disconnect, so this bypasses the capacity check by retrying; and a
    // disconnect must not overtake the peer's messages still waiting to be posted.
    const post = (): void => void (this.waiting.length ? this.postLater(msg, undefined) : this.mailbox.post(msg)).catch((err: DfsError) => {
      if (err.code === "BUSY") setTimeout(post, 10);
    });
    post();
  }

  close(): void {
    this.mailbox.close();
  }
}

/** Told of every request a router answered: its type, its result code ("OK" or an error code) and how long it took. */
export type RequestObserver = (type: string, code: string, seconds: number) => void;

/** Routes incoming messages to the actor owning the type's prefix; one port can host several roles. */
export class Router {
  private readonly actors: Actor[] = [];
  private observer?: RequestObserver;
  /** Until every role is added, a message for none of them may be for one still starting. */
  private complete = false;

  add(actor: Actor): void {
    this.actors.push(actor);
  }

  /** Every role of the node is in: from now on, a type no actor owns is unknown. */
  ready(): void {
    this.complete = true;
  }

  observe(observer: RequestObserver): void {
    this.observer = observer;
  }

  dispatch(type: string, body: unknown, peer: Peer): Promise<unknown> {
    const observer = this.observer;
    const started = observer ? performance.now() : 0;
    let actor: Actor | undefined;
    for (const a of this.actors) {
      if (type.startsWith(a.init.prefix)) {
        actor = a;
        break;
      }
    }
    const routed = actor ? actor.post(type, body, peer)
      : Promise.reject(this.complete
        ? new DfsError("BAD_REQUEST", `unknown message type ${JSON.stringify(type)}`)
        : new DfsError("UNAVAILABLE", "node is starting; try again shortly"));
    if (!observer) return routed;
    // A peer may send any type name: only the ones an actor handles become label values.
    const label = actor && Object.hasOwn(actor.init.handlers, type) ? type : "other";
    const done = (code: string) => observer(label, code, (performance.now() - started) / 1000);
    return routed.then(
      (reply) => (done("OK"), reply),
      (err: unknown) => {
        done(err instanceof DfsError ? err.code : "INTERNAL");
        throw err;
      },
    );
  }

  peerClosed(peer: Peer): void {
    for (const a of this.actors) a.peerClosed(peer);
  }
}
