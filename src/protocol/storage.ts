import { z } from "zod";
import { bytes, nodeUrl, sha256Hex } from "./common.js";

/** Wire contract of the storage role (`store.*`). */
export const storeSchemas = {
  put: z.object({
    hash: sha256Hex,
    data: bytes,
    /** The rest of the replication chain: this node forwards the chunk to chain[0] with chain.slice(1). */
    chain: z.array(nodeUrl).max(16).default([]),
  }),
  get: z.object({ hash: sha256Hex }),
  has: z.object({ hashes: z.array(sha256Hex).max(100_000) }),
  delete: z.object({ hashes: z.array(sha256Hex).max(100_000) }),
  /** Ask this node to copy chunks from another node (repair). */
  copy: z.object({ chunks: z.array(z.object({ hash: sha256Hex, from: z.array(nodeUrl).min(1).max(16) })).max(10_000) }),
} as const;

export interface PutReply {
  /** URLs of the nodes of the chain that now hold the chunk. */
  stored: string[];
}

export interface GetReply {
  data: Uint8Array;
}
