/** How often a connection pings its peer and how many pings in a row may go unanswered. */
export interface HeartbeatOptions {
  intervalMs: number;
  /** Unanswered pings in a row after which the peer is dead. */
  maxPingOut: number;
}

/**
 * Links to the directory and the lock service, and the server side of every connection: a peer
 * silent for less than 10 s (an event loop blocked by a snapshot or a long scan) keeps its
 * connection; one that is gone is noticed within 11 s, well before the default dead-after of 30 s.
 * It pings every second all the same: while we do not read a peer's socket its pings go unanswered,
 * and our own pings are then what tell its heartbeat (maybe a stricter one) that we are alive.
 */
export const CONTROL_HEARTBEAT: HeartbeatOptions = Object.freeze({ intervalMs: 1000, maxPingOut: 10 });

/**
 * Connections that carry chunks (client to storage, storage to storage): a frozen node (a stopped
 * process, a machine gone without closing its sockets) is noticed within 4 s, so that the requests
 * waiting on it fail UNAVAILABLE and the chunk goes elsewhere. Silence under 3 s is tolerated.
 */
export const DATA_HEARTBEAT: HeartbeatOptions = Object.freeze({ intervalMs: 1000, maxPingOut: 3 });

/** What a heartbeat needs from its connection. */
export interface HeartbeatHost {
  ping(): void;
  /** Whether we have stopped reading the peer's socket: then its pongs cannot reach us. */
  readonly readsPaused: boolean;
  /** Whether frames of ours wait to be written to the socket. */
  readonly writesPending: boolean;
  /** Grows each time the socket takes one of our frames. */
  readonly framesWritten: number;
  /** Called once, when `maxPingOut` pings in a row went unanswered. */
  dead(missed: number): void;
}

/**
 * Liveness of one connection, kept apart from the connection (as nats.js does): pings every
 * interval, and declares the peer dead only after `maxPingOut` of them in a row went unanswered,
 * so a silence shorter than maxPingOut intervals is always survived, and one of maxPingOut + 1
 * intervals is not, unless it was excused.
 * Anything heard from the peer counts as an answer, not only a pong. Two silences are not held
 * against the peer: a tick that fires late (our own event loop was blocked, and the peer's answer
 * may be waiting unread behind this timer), and a silence while we ourselves do not read its
 * socket, unless our frames to it also stopped moving (then it does not read either).
 */
export class Heartbeat {
  private timer?: NodeJS.Timeout;
  private due = 0;
  private heard = false;
  private pinged = false;
  private out = 0;
  private writtenAtTick = 0;

  constructor(
    private readonly host: HeartbeatHost,
    private readonly options: HeartbeatOptions,
  ) {
    if (!(options.intervalMs > 0) || !(Number.isInteger(options.maxPingOut) && options.maxPingOut >= 1)) {
      throw new RangeError(`bad heartbeat ${JSON.stringify(options)}: intervalMs > 0 and maxPingOut >= 1 are needed`);
    }
  }

  /** Unanswered pings in a row so far. */
  get pingsOut(): number {
    return this.out;
  }

  start(): void {
    this.stop();
    this.schedule();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The peer said something: it is alive. */
  alive(): void {
    this.heard = true;
  }

  private schedule(): void {
    this.due = performance.now() + this.options.intervalMs;
    this.timer = setTimeout(() => this.tick(), this.options.intervalMs);
    this.timer.unref();
  }

  private tick(): void {
    this.timer = undefined;
    const late = performance.now() - this.due > this.options.intervalMs / 2;
    const writesStuck = this.host.writesPending && this.host.framesWritten === this.writtenAtTick;
    this.writtenAtTick = this.host.framesWritten;
    if (this.heard) this.out = 0;
    else if (late || (this.host.readsPaused && !writesStuck)) {
      // Not the peer's fault, or not knowable now: neither count the silence nor forgive it.
    } else if (this.pinged) this.out++;
    this.heard = false;
    if (this.out >= this.options.maxPingOut) return this.host.dead(this.out);
    this.host.ping();
    this.pinged = true;
    this.schedule();
  }
}
