import { z } from "zod";
import { count, remotePath } from "./common.js";
import { sessionId } from "./directory.js";

/** Wire contract of the lock role (`lock.*`). Renew and release must come from the session that acquired. */
export const lockSchemas = {
  acquire: z.object({
    path: remotePath,
    ttlMs: count.min(100).max(3_600_000).default(10_000),
    /** How long to queue behind the current holder before answering LOCKED. */
    waitMs: count.max(3_600_000).default(0),
    /** Free text shown to others who find the lock taken (e.g. user@host). */
    owner: z.string().max(200).default(""),
    session: sessionId,
  }),
  renew: z.object({ path: remotePath, token: count, session: sessionId, ttlMs: count.min(100).max(3_600_000).default(10_000) }),
  release: z.object({ path: remotePath, token: count, session: sessionId }),
} as const;

export interface LockGrant {
  path: string;
  token: number;
  /** Epoch ms at which the lease ends unless renewed, on the directory's clock (for people). */
  expiresAt: number;
  /** How long the lease still runs as the lock service answers: what a holder times it by, free of clock skew. */
  remainingMs: number;
}
