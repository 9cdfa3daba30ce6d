import { toDfsError } from "../../protocol/errors.js";
import type { Logger } from "../../log.js";
import { PieceSender, type StreamHead } from "../piece-sender.js";
import type { PeerPool } from "../upstream.js";

/**
 * The next node of a chain, as the stream this node forwards a chunk's pieces to. Its failure never fails
 * this node's own copy: from then on pieces are no longer sent, and the close reports no downstream copy,
 * so the writer places the missing copies elsewhere.
 */
export class Downstream {
  private readonly sender: PieceSender;
  private failed = false;

  constructor(
    peers: PeerPool,
    url: string,
    head: StreamHead,
    private readonly log: Logger,
  ) {
    this.sender = new PieceSender(peers, url, head);
    this.sender.opened.catch((err) => this.fail(err));
  }

  /** Resolves once the next node wrote the piece, or once it dropped out; never rejects. */
  piece(offset: number, data: Uint8Array): Promise<void> {
    if (this.failed) return Promise.resolve();
    return this.sender.piece(offset, data).catch((err) => this.fail(err));
  }

  /** The nodes from the next one on that hold the chunk; none when it dropped out. */
  async close(): Promise<string[]> {
    if (this.failed) return [];
    try {
      return (await this.sender.close()).stored;
    } catch (err) {
      this.fail(err);
      return [];
    }
  }

  /** This node gave up on the stream: so does the next one. */
  abort(): void {
    this.failed = true;
    this.sender.abort();
  }

  private fail(err: unknown): void {
    if (this.failed) return;
    this.failed = true;
    this.log.warn("chain forward failed", { next: this.sender.url, hash: this.sender.head.hash, err: toDfsError(err).message });
    this.sender.abort();
  }
}
