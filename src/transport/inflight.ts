/** How much work one peer may have in flight with us before we stop reading its socket. */
export interface InflightLimits {
  /**
   * Requests and tells received and not yet answered (reply written to the socket). Default 8192: above
   * what one peer may hold in a default mailbox, so that a flood whose answers are read meets BUSY first.
   */
  requests?: number;
  /** Their bytes, request and reply together. Default 32 MiB: eight 4 MiB chunk puts with room to spare. */
  bytes?: number;
}

export const DEFAULT_INFLIGHT = Object.freeze({ requests: 8192, bytes: 32 * 1024 * 1024 });

/** The socket side of a read gate: ws's WebSocket has both. */
export interface Pausable {
  pause(): void;
  resume(): void;
}

/**
 * Counts what a peer has in flight with us, from the frame's arrival until its answer is written
 * to the socket, and stops reading the peer's socket while that is over a limit; reading resumes
 * once both counts are back to half. A peer that floods us, or that does not read its answers,
 * thereby waits on TCP instead of growing our queues. Deferred replies count until written, too.
 *
 * The bound is soft by the frames of the one socket read that ws was parsing when it paused: ws
 * still delivers the frames it already holds.
 */
export class Inflight {
  private readonly maxRequests: number;
  private readonly maxBytes: number;
  private requests = 0;
  private bytes = 0;
  private _paused = false;

  constructor(private readonly socket: Pausable, limits: InflightLimits = {}) {
    this.maxRequests = limits.requests ?? DEFAULT_INFLIGHT.requests;
    this.maxBytes = limits.bytes ?? DEFAULT_INFLIGHT.bytes;
    if (!(this.maxRequests >= 1 && this.maxBytes >= 1)) throw new RangeError(`bad in-flight limits ${JSON.stringify(limits)}`);
  }

  get paused(): boolean {
    return this._paused;
  }

  get load(): { requests: number; bytes: number; paused: boolean } {
    return { requests: this.requests, bytes: this.bytes, paused: this._paused };
  }

  /** A frame arrived that will be answered (or handled) later; returns its release. */
  hold(bytes: number): Ticket {
    this.adjust(1, bytes);
    return new Ticket(this, bytes);
  }

  /** @internal */
  adjust(requests: number, bytes: number): void {
    this.requests += requests;
    this.bytes += bytes;
    if (!this._paused && (this.requests > this.maxRequests || this.bytes > this.maxBytes)) {
      this._paused = true;
      this.socket.pause();
    } else if (this._paused && this.requests <= this.maxRequests / 2 && this.bytes <= this.maxBytes / 2) {
      this._paused = false;
      this.socket.resume();
    }
  }
}

/** One frame's share of the in-flight counts; `release` is idempotent. */
export class Ticket {
  private done = false;

  constructor(private readonly owner: Inflight, private bytes: number) {}

  /** The answer was encoded: its bytes count until written. */
  grow(bytes: number): void {
    if (this.done) return;
    this.bytes += bytes;
    this.owner.adjust(0, bytes);
  }

  release(): void {
    if (this.done) return;
    this.done = true;
    this.owner.adjust(-1, -this.bytes);
  }
}
