import { z } from "zod";
import { DfsError } from "./errors.js";

/**
 * A file version's metadata: a small map of names to strings (an S3 object's content type and user
 * metadata, say), kept with the version in the directory. Bounded, so that a listing with metadata and a
 * commit of many files stay small.
 */
export type FileMeta = Record<string, string>;

export const MAX_META_ENTRIES = 64;
export const MAX_META_KEY_LENGTH = 128;
/** Of the map as JSON (UTF-8), which is how both back ends keep it. */
export const MAX_META_BYTES = 8 * 1024;

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (v instanceof Uint8Array) return "binary";
  return typeof v === "object" ? "a map" : `a ${typeof v}`;
}

/** Why `meta` is not acceptable file metadata, or undefined when it is. */
export function fileMetaProblem(meta: unknown): string | undefined {
  const proto = meta !== null && typeof meta === "object" ? Object.getPrototypeOf(meta) : undefined;
  if (proto !== Object.prototype && proto !== null) return `meta must be a map of keys to strings, not ${kindOf(meta)}`;
  const entries = Object.entries(meta as object);
  if (entries.length > MAX_META_ENTRIES) return `meta has ${entries.length} entries; at most ${MAX_META_ENTRIES}`;
  for (const [key, value] of entries) {
    if (key.length === 0) return "a meta key may not be empty";
    if (key.length > MAX_META_KEY_LENGTH) return `meta key ${JSON.stringify(key.slice(0, 24) + "...")} is longer than ${MAX_META_KEY_LENGTH} characters`;
    // A plain object cannot hold this key as an entry; it would be dropped on the way.
    if (key === "__proto__") return "meta key __proto__ is not allowed";
    if (typeof value !== "string") return `meta ${JSON.stringify(key)} must be a string, not ${kindOf(value)}`;
  }
  const bytes = Buffer.byteLength(JSON.stringify(meta));
  if (bytes > MAX_META_BYTES) return `meta takes ${bytes} bytes as JSON; at most ${MAX_META_BYTES}`;
  return undefined;
}

/** The metadata as kept: an empty map is none. Throws BAD_REQUEST naming what is wrong. */
export function checkFileMeta(meta: unknown): FileMeta | undefined {
  if (meta === undefined) return undefined;
  const problem = fileMetaProblem(meta);
  if (problem) throw new DfsError("BAD_REQUEST", problem);
  return Object.keys(meta as object).length > 0 ? { ...(meta as FileMeta) } : undefined;
}

/** A message field holding file metadata; yields undefined for an empty map. */
export const fileMeta = z.unknown().transform((v, ctx): FileMeta | undefined => {
  const problem = fileMetaProblem(v);
  if (problem) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
    return z.NEVER;
  }
  return Object.keys(v as object).length > 0 ? (v as FileMeta) : undefined;
});

/** The text a back end stores for a version's metadata (null: none). */
export function encodeFileMeta(meta: FileMeta | undefined): string | null {
  return meta && Object.keys(meta).length > 0 ? JSON.stringify(meta) : null;
}

/** The metadata of a stored text, for replies: absent when none. */
export function decodeFileMeta(text: unknown): { meta?: FileMeta } {
  return typeof text === "string" && text !== "" ? { meta: JSON.parse(text) as FileMeta } : {};
}
