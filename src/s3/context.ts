import type { IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import type { DfsClient } from "../roles/client.js";
import { S3Error } from "./errors.js";

/** What an S3 key may touch. */
export interface KeyScope {
  id: string;
  /** Bucket names, or "*" for all. */
  buckets: string[];
}

/** One request, as an operation sees it. */
export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  requestId: string;
  bucket?: string;
  key?: string;
  query: URLSearchParams;
  scope: KeyScope;
  client: DfsClient;
  /** The request body as the object's bytes, its signature or hash checked as it streams. */
  body(): Readable;
}

/** What an operation answers: a status, headers and an XML document, or a body it writes itself. */
export interface Reply {
  status?: number;
  headers?: Record<string, string | number>;
  xml?: string;
  /** Streams the body to the response (GetObject). */
  stream?: (res: ServerResponse) => Promise<void>;
}

export function mayUse(scope: KeyScope, bucket: string): boolean {
  return scope.buckets.includes("*") || scope.buckets.includes(bucket);
}

/** Reads a small request body (an XML document) whole, refusing more than `limit` bytes. */
export async function smallBody(ctx: Ctx, limit = 1024 * 1024): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const piece of ctx.body()) {
    size += (piece as Buffer).length;
    if (size > limit) throw new S3Error("MaxMessageLengthExceeded", "Your request was too big.", 400);
    parts.push(piece as Buffer);
  }
  return Buffer.concat(parts).toString("utf8");
}
