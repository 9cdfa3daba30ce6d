import { DfsError, toDfsError } from "../protocol/errors.js";

/**
 * What a handler may return to free its mailbox slot before the reply is ready (e.g. waiting on a
 * group fsync or on a lock). The message keeps counting against the mailbox's capacity until it settles.
 */
export class Later<T = unknown> {
  constructor(readonly result: Promise<T>) {}
}

/** Wraps a promise so the mailbox moves on to the next message while the reply waits for it. */
export function later<T>(result: Promise<T>): Later<T> {
  return new Later(result);
}

/**
 * How long queued messages may run back to back before the mailbox lets the event loop turn: handlers
 * chained through promises never yield by themselves, so a deep queue would hold back pongs and reads.
 */
const SLICE_MS = 10;

export interface MailboxInit<M> {
  /** Messages handled at once: 1 for roles whose state must be serial. */
  concurrency: number;
  /**
   * Messages held beyond the running ones: queued, or handled and awaiting a deferred reply.
   * One more is answered BUSY.
   */
  capacity: number;
  /** Most messages one sender may have held at once (running, queued or deferred). Default: no limit of its own. */
  senderCapacity?: number;
  handle: (msg: M) => unknown | Promise<unknown>;
}

interface Slot<M> {
  msg: M;
  sender: unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * An actor's inbox: messages reach the handler in arrival order, at most `concurrency` at once;
 * a full mailbox answers BUSY; whatever the handler throws becomes a DfsError for the caller.
 * Every message counts from `post` until its reply is settled, deferred replies included, so that
 * requests parked on a slow disk or a lock cannot pile up without bound.
 */
export class Mailbox<M> {
  private readonly queue: Slot<M>[] = [];
  private readonly perSender = new Map<unknown, number>();
  private head = 0;
  private running = 0;
  private _held = 0;
  private closed = false;
  private sliceStart = performance.now();
  private yielding = false;

  constructor(private readonly init: MailboxInit<M>) {}

  /** Messages waiting for a slot. */
  get depth(): number {
    return this.queue.length - this.head;
  }

  /** Messages posted and not yet settled: queued, running or awaiting a deferred reply. */
  get held(): number {
    return this._held;
  }

  /** Posts a message; `sender` (e.g. a connection's id) is what `senderCapacity` counts by. */
  post(msg: M, sender?: unknown): Promise<unknown> {
    if (this.closed) return Promise.reject(new DfsError("UNAVAILABLE", "node is shutting down"));
    if (this._held >= this.init.concurrency + this.init.capacity) {
      return Promise.reject(new DfsError("BUSY", "node is busy: its queue is full, try again shortly"));
    }
    const mine = sender === undefined ? 0 : (this.perSender.get(sender) ?? 0);
    if (sender !== undefined && this.init.senderCapacity !== undefined && mine >= this.init.senderCapacity) {
      return Promise.reject(new DfsError("BUSY", "node is busy: this connection has too many requests waiting, try again shortly"));
    }
    this._held++;
    if (sender !== undefined) this.perSender.set(sender, mine + 1);
    return new Promise((resolve, reject) => {
      this.queue.push({ msg, sender, resolve, reject });
      this.pump();
    });
  }

  /** Refuses new messages; those already queued still run. */
  close(): void {
    this.closed = true;
  }

  private pump(): void {
    while (this.running < this.init.concurrency && this.head < this.queue.length) {
      const slot = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as Slot<M>;
      if (this.head > 1024 && this.head * 2 > this.queue.length) {
        this.queue.splice(0, this.head);
        this.head = 0;
      }
      this.running++;
      void this.run(slot);
    }
  }

  /** Starts the next message now, or after the event loop has turned once if this stretch ran long. */
  private next(): void {
    if (performance.now() - this.sliceStart < SLICE_MS) return this.pump();
    if (this.yielding) return;
    this.yielding = true;
    setImmediate(() => {
      this.yielding = false;
      this.sliceStart = performance.now();
      this.pump();
    });
  }

  private async run(slot: Slot<M>): Promise<void> {
    let deferred: Promise<unknown> | undefined;
    try {
      const value = await this.init.handle(slot.msg);
      if (value instanceof Later) deferred = value.result;
      else this.resolve(slot, value);
    } catch (err) {
      this.reject(slot, err);
    } finally {
      this.running--;
      this.next();
    }
    if (deferred) deferred.then((value) => this.resolve(slot, value), (err) => this.reject(slot, err));
  }

  private resolve(slot: Slot<M>, value: unknown): void {
    this.release(slot);
    slot.resolve(value);
  }

  private reject(slot: Slot<M>, err: unknown): void {
    this.release(slot);
    slot.reject(toDfsError(err));
  }

  private release(slot: Slot<M>): void {
    this._held--;
    if (slot.sender === undefined) return;
    const left = (this.perSender.get(slot.sender) ?? 1) - 1;
    if (left > 0) this.perSender.set(slot.sender, left);
    else this.perSender.delete(slot.sender);
  }
}
