import { z } from "zod";
import { DfsError } from "./errors.js";

/** Builds a body parser for a handler: checks the shape once, at the edge, and throws BAD_REQUEST with the first problem. */
export function parser<S extends z.ZodTypeAny>(schema: S): (body: unknown) => z.output<S> {
  return (body) => {
    const r = schema.safeParse(body);
    if (r.success) return r.data;
    const issue = r.error.issues[0];
    const where = issue?.path.length ? issue.path.join(".") + ": " : "";
    throw new DfsError("BAD_REQUEST", `malformed message: ${where}${issue?.message ?? "wrong shape"}`);
  };
}

export const MAX_PATH_LENGTH = 4096;
/** Largest chunk: a put must fit in one message, whose frame limit leaves 1 MiB for the envelope. */
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;
export const MAX_NAME_LENGTH = 255;

/**
 * Normalises a remote path to `/a/b.txt`. Refuses `..`, `.`, NUL and control characters,
 * empty parts inside the path, and over-long names, each with a sentence saying which.
 */
export function normalizePath(input: string): string {
  if (typeof input !== "string" || input.length === 0) throw new DfsError("BAD_REQUEST", "a remote path is required");
  if (input.length > MAX_PATH_LENGTH) throw new DfsError("BAD_REQUEST", `path is longer than ${MAX_PATH_LENGTH} characters`);
  if (/[\u0000-\u001f\u007f]/.test(input)) throw new DfsError("BAD_REQUEST", "path contains a NUL or control character");
  const trimmed = input.startsWith("/") ? input.slice(1) : input;
  const parts = trimmed.endsWith("/") ? trimmed.slice(0, -1).split("/") : trimmed.split("/");
  for (const p of parts) {
    if (p === "") throw new DfsError("BAD_REQUEST", `path ${JSON.stringify(input)} has an empty part (//)`);
    if (p === ".." || p === ".") throw new DfsError("BAD_REQUEST", `path ${JSON.stringify(input)} may not contain "${p}"`);
    if (Buffer.byteLength(p) > MAX_NAME_LENGTH) throw new DfsError("BAD_REQUEST", `a name in the path is longer than ${MAX_NAME_LENGTH} bytes`);
  }
  return "/" + parts.join("/");
}

/** A zod string that must be a valid remote path; yields the normalised form. */
export const remotePath = z.string().max(MAX_PATH_LENGTH).transform((s, ctx) => {
  try {
    return normalizePath(s);
  } catch (err) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message });
    return z.NEVER;
  }
});

export const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "must be a lowercase hex SHA-256");
export const nodeUrl = z.string().max(512).regex(/^wss:\/\/[^\s/]+$/, "must be wss://host:port");
export const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, "must be binary");
export const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
