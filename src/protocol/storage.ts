import { z } from "zod";
import { bytes, count, MAX_CHUNK_SIZE, nodeUrl, sha256Hex } from "./common.js";

/**
 * Epoch of the background runner that sends an order: directories sharing one database take turns running
 * background work, and each takeover raises it. A node refuses an order below the highest epoch it has
 * accepted (STALE_TOKEN). Absent when a single directory runs alone.
 */
const epoch = count.optional();

/**
 * A chunk larger than this travels as a stream of pieces of at most this size (`store.open`, `store.piece`,
 * `store.close`), so that every node of the chain forwards a piece as soon as it has it; smaller chunks go
 * whole in one `store.put`. 1 MiB: a 4 MiB chunk is 4 pieces. Every piece costs each hop a message and an
 * answer, and on machines where the nodes share the CPUs that cost is what bounds a write: 256 KiB pieces
 * wrote 1 GiB about a fifth slower than 1 MiB ones, for no gain in latency worth having.
 */
export const PIECE_SIZE = 1024 * 1024;

/**
 * Pieces of one stream a sender may have unanswered at once. A piece is answered once every node of the
 * rest of the chain has it written (or has dropped out), so this bounds the pieces of a stream held at
 * each node, and with a client's window of chunks, what a writer holds in every node's mailbox.
 */
export const PIECE_WINDOW = 4;

/**
 * A stream that owes its sender no answer and has received nothing for this long is abandoned: its sender
 * stopped (a frozen or vanished client, or the node before in the chain) without closing the connection.
 */
export const STREAM_IDLE_MS = 5_000;

/** Pieces of one stream that may arrive before one they follow, e.g. when a sender's connection reorders them. */
export const MAX_PIECES_AHEAD = 16;

/** A stream id, chosen by the sender; it names the stream on that one connection only. */
const streamId = z.number().int().min(1).max(2 ** 32);

/** Wire contract of the storage role (`store.*`). */
export const storeSchemas = {
  put: z.object({
    hash: sha256Hex,
    /** Generation of the placement this put follows (`dir.place`). */
    gen: count,
    /** The rest of the replication chain: this node forwards the chunk to chain[0] with chain.slice(1). */
    chain: z.array(nodeUrl).max(16).default([]),
    data: bytes,
  }),
  /**
   * Starts receiving a chunk of `size` bytes in pieces on this connection (the space is claimed now,
   * NO_SPACE otherwise); the node opens the same stream to chain[0] with chain.slice(1).
   */
  open: z.object({
    stream: streamId,
    hash: sha256Hex,
    gen: count,
    size: z.number().int().min(1).max(MAX_CHUNK_SIZE),
    chain: z.array(nodeUrl).max(16).default([]),
  }),
  /** Bytes [offset, offset + data.length) of an open stream; answered once written here and downstream. */
  piece: z.object({
    stream: streamId,
    offset: count,
    data: bytes.refine((d) => d.length >= 1 && d.length <= PIECE_SIZE, `a piece carries 1 to ${PIECE_SIZE} bytes`),
  }),
  /** Every piece was answered: check, make durable, report; the reply is a {@link PutReply}. */
  close: z.object({ stream: streamId }),
  /** The sender gives up on a stream: the node drops what it received and aborts its own downstream. */
  abort: z.object({ stream: streamId }),
  get: z.object({ hash: sha256Hex }),
  has: z.object({ hashes: z.array(sha256Hex).max(100_000) }),
  /** Re-hash a chunk on disk: the directory asks before it believes a report of a bad replica. */
  verify: z.object({ hash: sha256Hex }),
  /**
   * Delete chunks, unless one was stored under a placement newer than `gen` (or the node cannot tell,
   * having restarted since): the directory orders deletes at generation `gen`.
   */
  delete: z.object({ hashes: z.array(sha256Hex).max(100_000), gen: count, epoch }),
  /** Ask this node to copy chunks from another node (repair). */
  copy: z.object({
    gen: count,
    epoch,
    chunks: z.array(z.object({ hash: sha256Hex, from: z.array(nodeUrl).min(1).max(16) })).max(10_000),
  }),
} as const;

export interface PutReply {
  /** URLs of the nodes of the chain that now hold the chunk. */
  stored: string[];
}

export interface GetReply {
  data: Uint8Array;
}

export interface VerifyReply {
  state: "ok" | "missing" | "corrupt";
}

export interface DeleteReply {
  deleted: string[];
  /** Chunks kept because a newer placement stored them, or because this node cannot tell. */
  kept: string[];
}

/**
 * How long a chunk transfer through `hops` nodes (a put along a chain, or a get) may take before it is
 * abandoned and tried elsewhere: a few seconds per hop plus one per MiB, so that a node whose disk hung
 * costs a writer seconds, not minutes, and each node of a chain gives up on the next one before the one
 * before it gives up on it.
 */
export function transferTimeoutMs(bytes: number, hops: number): number {
  return 5_000 + hops * (5_000 + Math.ceil(bytes / (1024 * 1024)) * 1000);
}
