import type { ListEntry } from "../protocol/directory.js";
import { LAST_CHAR } from "../roles/directory/rules.js";
import { requireBucket } from "./buckets.js";
import type { Ctx, Reply } from "./context.js";
import { etagOf } from "./etag.js";
import { BUCKET_MARKER, keyOf } from "./names.js";
import { xmlDocument, type Element } from "./xml.js";
import { S3Error } from "./errors.js";

interface Listed {
  contents: ListEntry[];
  prefixes: string[];
  truncated: boolean;
  /** The dfs path the next page starts after. */
  after: string;
}

/** Keys under `prefix` past `after`, rolled up at `delimiter`: skips over a common prefix's keys instead of reading them. */
async function listKeys(ctx: Ctx, bucket: string, prefix: string, delimiter: string, after: string, maxKeys: number): Promise<Listed> {
  const base = `/${bucket}/`;
  const contents: ListEntry[] = [];
  const prefixes: string[] = [];
  let count = 0;
  for (;;) {
    const page = await ctx.client.ls(base + prefix, { after, limit: Math.min(1000, maxKeys - count + 1), meta: true });
    let jumped = false;
    for (const e of page) {
      const key = keyOf(bucket, e.path);
      if (key === BUCKET_MARKER) {
        after = e.path;
        continue;
      }
      if (count === maxKeys) return { contents, prefixes, truncated: true, after };
      const cut = delimiter ? key.indexOf(delimiter, prefix.length) : -1;
      if (cut >= 0) {
        const common = key.slice(0, cut + delimiter.length);
        prefixes.push(common);
        count++;
        after = base + common + LAST_CHAR;
        jumped = true;
        break;
      }
      contents.push(e);
      count++;
      after = e.path;
    }
    if (!jumped && page.length < Math.min(1000, maxKeys - count + 1)) return { contents, prefixes, truncated: false, after };
    if (count === maxKeys) {
      // Full: truncated only if anything (but the marker) lies beyond.
      const more = await ctx.client.ls(base + prefix, { after, limit: 2 });
      return { contents, prefixes, truncated: more.some((e) => keyOf(bucket, e.path) !== BUCKET_MARKER), after };
    }
  }
}

function maxKeysOf(ctx: Ctx): number {
  const text = ctx.query.get("max-keys");
  if (text === null) return 1000;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new S3Error("InvalidArgument", "max-keys must be a non-negative integer", 400);
  return Math.min(n, 1000);
}

function encoder(ctx: Ctx): (s: string) => string {
  const type = ctx.query.get("encoding-type");
  if (type === null) return (s) => s;
  if (type !== "url") throw new S3Error("InvalidArgument", "Invalid Encoding Method specified in Request", 400);
  return (s) => encodeURIComponent(s).replace(/%2F/g, "/");
}

function contentsOf(ctx: Ctx, bucket: string, list: ListEntry[], enc: (s: string) => string, owner: boolean): Element[] {
  return list.map((e) => ({
    Key: enc(keyOf(bucket, e.path)),
    LastModified: new Date(e.mtime).toISOString(),
    ETag: etagOf(e),
    Size: e.size,
    ...(owner ? { Owner: { ID: ctx.scope.id, DisplayName: ctx.scope.id } } : {}),
    StorageClass: "STANDARD",
  }));
}

export async function listObjectsV2(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const prefix = ctx.query.get("prefix") ?? "";
  const delimiter = ctx.query.get("delimiter") ?? "";
  const maxKeys = maxKeysOf(ctx);
  const enc = encoder(ctx);
  const token = ctx.query.get("continuation-token");
  const startAfter = ctx.query.get("start-after") ?? "";
  let after = startAfter ? `/${bucket}/${startAfter}` : "";
  if (token !== null) {
    const decoded = Buffer.from(token, "base64url").toString("utf8");
    if (!decoded.startsWith(`/${bucket}/`)) throw new S3Error("InvalidArgument", "The continuation token provided is incorrect", 400);
    after = decoded;
  }
  const l = await listKeys(ctx, bucket, prefix, delimiter, after, maxKeys);
  return {
    xml: xmlDocument("ListBucketResult", {
      Name: bucket,
      Prefix: enc(prefix),
      ...(startAfter ? { StartAfter: enc(startAfter) } : {}),
      ...(token !== null ? { ContinuationToken: token } : {}),
      KeyCount: l.contents.length + l.prefixes.length,
      MaxKeys: maxKeys,
      ...(delimiter ? { Delimiter: enc(delimiter) } : {}),
      ...(ctx.query.get("encoding-type") ? { EncodingType: "url" } : {}),
      IsTruncated: l.truncated,
      ...(l.truncated ? { NextContinuationToken: Buffer.from(l.after).toString("base64url") } : {}),
      Contents: contentsOf(ctx, bucket, l.contents, enc, ctx.query.get("fetch-owner") === "true"),
      CommonPrefixes: l.prefixes.map((p) => ({ Prefix: enc(p) })),
    }),
  };
}

export async function listObjectsV1(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const prefix = ctx.query.get("prefix") ?? "";
  const delimiter = ctx.query.get("delimiter") ?? "";
  const marker = ctx.query.get("marker") ?? "";
  const maxKeys = maxKeysOf(ctx);
  const enc = encoder(ctx);
  const l = await listKeys(ctx, bucket, prefix, delimiter, marker ? `/${bucket}/${marker}` : "", maxKeys);
  const last = [...l.contents.map((e) => keyOf(bucket, e.path)), ...l.prefixes].sort().at(-1);
  return {
    xml: xmlDocument("ListBucketResult", {
      Name: bucket,
      Prefix: enc(prefix),
      Marker: enc(marker),
      ...(l.truncated && delimiter && last !== undefined ? { NextMarker: enc(last) } : {}),
      MaxKeys: maxKeys,
      ...(delimiter ? { Delimiter: enc(delimiter) } : {}),
      ...(ctx.query.get("encoding-type") ? { EncodingType: "url" } : {}),
      IsTruncated: l.truncated,
      Contents: contentsOf(ctx, bucket, l.contents, enc, true),
      CommonPrefixes: l.prefixes.map((p) => ({ Prefix: enc(p) })),
    }),
  };
}
