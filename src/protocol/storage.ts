import { z } from "zod";
import { bytes, count, nodeUrl, sha256Hex } from "./common.js";

/**
 * Epoch of the background runner that sends an order: directories sharing one database take turns running
 * background work, and each takeover raises it. A node refuses an order below the highest epoch it has
 * accepted (STALE_TOKEN). Absent when a single directory runs alone.
 */
const epoch = count.optional();

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
