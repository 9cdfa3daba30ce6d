import { DfsError, toDfsError } from "../protocol/errors.js";

/** What a handler may return to free its mailbox slot before the reply is ready (e.g. waiting on a group fsync). */
export class Later<T = unknown> {
  constructor(readonly result: Promise<T>) {}
}

/** Wraps a promise so the mailbox moves on to the next message while the reply waits for it. */
export function later<T>(result: Promise<T>): Later<T> {
  return new Later(result);
}

export interface MailboxInit<M> {
  /** Messages handled at once: 1 for roles whose state must be serial. */
  concurrency: number;
  /** Messages waiting beyond that; one more is answered BUSY. */
  capacity: number;
  handle: (msg: M) => unknown | Promise<unknown>;
}

interface Slot<M> {
  msg: M;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * An actor's inbox: messages reach the handler in arrival order, at most `concurrency` at once;
 * a full queue answers BUSY; whatever the handler throws becomes a DfsError for the caller.
 */
export class Mailbox<M> {
  private readonly queue: Slot<M>[] = [];
  private head = 0;
  private running = 0;
  private closed = false;

  constructor(private readonly init: MailboxInit<M>) {}

  get depth(): number {
    return this.queue.length - this.head;
  }

  post(msg: M): Promise<unknown> {
    if (this.closed) return Promise.reject(new DfsError("UNAVAILABLE", "node is shutting down"));
    if (this.depth >= this.init.capacity) {
      return Promise.reject(new DfsError("BUSY", "node is busy: its queue is full, try again shortly"));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ msg, resolve, reject });
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

  private async run(slot: Slot<M>): Promise<void> {
    let deferred: Promise<unknown> | undefined;
    try {
      const value = await this.init.handle(slot.msg);
      if (value instanceof Later) deferred = value.result;
      else slot.resolve(value);
    } catch (err) {
      slot.reject(toDfsError(err));
    } finally {
      this.running--;
      this.pump();
    }
    if (deferred) deferred.then(slot.resolve, (err) => slot.reject(toDfsError(err)));
  }
}
