import { z } from "zod";

/*
 * S3 access keys, kept by the directory for the S3 gateway: an access key id and its secret, and the
 * buckets the key may use. A key grants nothing that its holder's gateway could not do with its own
 * client certificate; it only narrows what an S3 client may ask the gateway for.
 */

/** An access key id: 20 capital letters and digits, as AWS's are; dfs's start with DFS. */
export const S3_KEY_ID = /^[A-Z0-9]{20}$/;
/** Length of a secret: 30 random bytes in base64. */
export const S3_SECRET_LENGTH = 40;
/** In a key's buckets: every bucket, present and future. Stands alone. */
export const ALL_BUCKETS = "*";
/** Buckets one key may name. */
export const MAX_KEY_BUCKETS = 1000;

export interface S3KeyInfo {
  id: string;
  /** Bucket names in byte order, or `["*"]`. */
  buckets: string[];
  /** When it was made, in milliseconds since 1970. */
  created: number;
}

/** A key with its secret: what `dir.s3key.add` and `dir.s3key.get` answer. */
export interface S3KeySecret extends S3KeyInfo {
  secret: string;
}

export interface S3KeyListReply {
  keys: S3KeyInfo[];
}

/** Why `name` is not an S3 bucket name (AWS's rules for new buckets), or undefined when it is one. */
export function bucketNameProblem(name: string): string | undefined {
  const shown = JSON.stringify(name.length > 70 ? name.slice(0, 64) + "..." : name);
  if (name.length < 3 || name.length > 63) return `bucket name ${shown} must be 3 to 63 characters long`;
  if (!/^[a-z0-9.-]+$/.test(name)) return `bucket name ${shown} may hold only lowercase letters, digits, dots and hyphens`;
  if (!/^[a-z0-9]/.test(name) || !/[a-z0-9]$/.test(name)) return `bucket name ${shown} must start and end with a letter or digit`;
  if (name.includes("..")) return `bucket name ${shown} may not hold two dots in a row`;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name)) return `bucket name ${shown} may not look like an IP address`;
  return undefined;
}

const keyId = z.string().max(64).regex(S3_KEY_ID, "must be an access key id: 20 capital letters and digits");

/** The buckets of a new key, checked, without repeats, in byte order; `*` alone for all. */
const buckets = z
  .array(z.string().max(255), { invalid_type_error: "buckets must be a list of bucket names" })
  .min(1, `name at least one bucket, or ${ALL_BUCKETS} for all`)
  .max(MAX_KEY_BUCKETS, `at most ${MAX_KEY_BUCKETS} buckets per key`)
  .transform((list, ctx) => {
    const all = list.includes(ALL_BUCKETS);
    if (all && list.some((b) => b !== ALL_BUCKETS)) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: `${ALL_BUCKETS} (every bucket) stands alone, without bucket names` });
      return z.NEVER;
    }
    if (all) return [ALL_BUCKETS];
    for (const b of list) {
      const problem = bucketNameProblem(b);
      if (problem) {
        ctx.addIssue({ code: z.ZodIssueCode.custom, message: problem });
        return z.NEVER;
      }
    }
    return [...new Set(list)].sort();
  });

/** Bodies of the directory's `dir.s3key.*` messages (see `dirSchemas`). */
export const s3KeySchemas = {
  s3keyAdd: z.object({ buckets }),
  s3keyList: z.object({}).passthrough(),
  s3keyRemove: z.object({ id: keyId }),
  s3keyGet: z.object({ id: keyId }),
} as const;
