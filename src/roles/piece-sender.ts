import { transferTimeoutMs, type PutReply } from "../protocol/storage.js";
import type { Peer } from "../transport/actor.js";
import type { PeerPool } from "./upstream.js";

/** What `store.open` announces: the chunk, its placement's generation, and the rest of the chain after the receiver. */
export interface StreamHead {
  hash: string;
  gen: number;
  size: number;
  chain: string[];
}

/** Stream ids are unique within this process, so that one never names two streams on a connection. */
let nextStream = 1;

/**
 * One chunk sent to a storage node as a stream of pieces (`store.open`, `store.piece`..., `store.close`):
 * used by the client for the first node of a chain and by each node for the next one. The stream lives on
 * one connection, the receiver knows it only there: once that connection closes, the stream fails
 * UNAVAILABLE and is not carried over to a new one. Pieces wait for the open's answer, then go out in
 * the order they were given; the caller bounds how many are unanswered.
 */
export class PieceSender {
  readonly stream = nextStream++;
  /** Settles with the open's answer; pieces are sent only once it succeeded. */
  readonly opened: Promise<void>;
  private readonly peer: Promise<Peer>;
  /** Nodes from the receiver to the end of the chain: each hop's timeout leaves room for those after it. */
  private readonly hops: number;
  private ended = false;

  constructor(pool: PeerPool, readonly url: string, readonly head: StreamHead) {
    this.hops = head.chain.length + 1;
    const timeoutMs = transferTimeoutMs(0, this.hops);
    this.peer = pool.get(url, { timeoutMs });
    const body = { stream: this.stream, hash: head.hash, gen: head.gen, size: head.size, chain: head.chain };
    this.opened = this.peer.then((p) => p.request<unknown>("store.open", body, { timeoutMs })).then(() => undefined);
    this.opened.catch(() => {}); // The caller observes it, or a piece fails with it.
  }

  /** Sends bytes [offset, offset + data.length); resolves once the receiver and its downstream wrote them. */
  async piece(offset: number, data: Uint8Array): Promise<void> {
    await this.opened;
    // `data` last: the codec then sends it as a fragment of its own, without copying it.
    await (await this.peer).request("store.piece", { stream: this.stream, offset, data }, { timeoutMs: transferTimeoutMs(data.length, this.hops) });
  }

  /** Once every piece was answered: the receiver checks and stores the chunk and says which nodes hold it. */
  async close(): Promise<PutReply> {
    this.ended = true;
    return (await this.peer).request<PutReply>("store.close", { stream: this.stream }, { timeoutMs: transferTimeoutMs(this.head.size, this.hops) });
  }

  /**
   * Gives up on the stream, telling the receiver to drop what it has, unless the connection is gone (the
   * receiver then drops the connection's streams by itself).
   */
  abort(): void {
    if (this.ended) return;
    this.ended = true;
    this.peer.then((p) => {
      if (!p.closed) p.request("store.abort", { stream: this.stream }, { timeoutMs: 5_000 }).catch(() => {});
    }, () => {});
  }
}
