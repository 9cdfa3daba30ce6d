import { createHash } from "node:crypto";

/** What the gateway keeps with an object's version, in its metadata map. */
export const META_ETAG = "s3-etag";
export const META_TYPE = "content-type";
/** User metadata keys carry this prefix in the map (x-amz-meta-NAME is kept as meta-NAME). */
export const META_USER = "meta-";

export interface Versioned {
  path: string;
  version: number;
  mtime: number;
  meta?: Record<string, string>;
}

/**
 * The object's ETag: the one the gateway stored (MD5 of a single-part upload, S3's multipart form), or for a
 * file written without the gateway an opaque tag of its version, suffixed "-1" so that no tool takes it for
 * an MD5 of the content.
 */
export function etagOf(f: Versioned): string {
  const stored = f.meta?.[META_ETAG];
  if (stored) return `"${stored}"`;
  return `"${createHash("md5").update(`${f.path}\n${f.version}\n${f.mtime}`).digest("hex")}-1"`;
}
