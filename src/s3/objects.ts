import { createHash } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { Transform, type Writable } from "node:stream";
import type { FileInfo } from "../protocol/directory.js";
import { requireBucket } from "./buckets.js";
import { mayUse, smallBody, type Ctx, type Reply } from "./context.js";
import { noSuchKey, S3Error, s3ErrorOf } from "./errors.js";
import { etagOf, META_ETAG, META_TYPE, META_USER } from "./etag.js";
import { objectPath } from "./names.js";
import { parseXml, xmlDocument } from "./xml.js";

type Meta = Record<string, string>;
type Versioned = FileInfo & { meta?: Meta };

/** The standard headers S3 keeps with an object and sends back with it, kept under their own (lower-case) names. */
const KEPT_HEADERS: Record<string, string> = {
  "cache-control": "Cache-Control", "content-disposition": "Content-Disposition", "content-encoding": "Content-Encoding",
  "content-language": "Content-Language", "expires": "Expires",
};

/** Content-Type, the other standard headers S3 keeps, and x-amz-meta-* of a request, as kept with the version. */
export function metaFromHeaders(headers: IncomingHttpHeaders): Meta {
  const meta: Meta = {};
  const type = headers["content-type"];
  if (typeof type === "string" && type) meta[META_TYPE] = type;
  for (const name of Object.keys(KEPT_HEADERS)) {
    let value = headers[name];
    if (typeof value !== "string") continue;
    // aws-chunked names how this request's body was framed, not how the object is encoded: S3 drops it.
    if (name === "content-encoding") value = value.split(",").map((s) => s.trim()).filter((s) => s && s.toLowerCase() !== "aws-chunked").join(",");
    if (value) meta[name] = value;
  }
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith("x-amz-meta-") && typeof value === "string") meta[META_USER + name.slice(11)] = value;
  }
  return meta;
}

function objectHeaders(info: Versioned): Record<string, string | number> {
  const h: Record<string, string | number> = {
    ETag: etagOf(info),
    "Last-Modified": new Date(info.mtime).toUTCString(),
    "Content-Type": info.meta?.[META_TYPE] ?? "binary/octet-stream",
    "Accept-Ranges": "bytes",
  };
  for (const [name, header] of Object.entries(KEPT_HEADERS)) {
    const v = info.meta?.[name];
    if (v !== undefined) h[header] = v;
  }
  for (const [k, v] of Object.entries(info.meta ?? {})) if (k.startsWith(META_USER)) h[`x-amz-meta-${k.slice(META_USER.length)}`] = v;
  return h;
}

export async function stat(ctx: Ctx, path: string): Promise<Versioned> {
  try {
    return (await ctx.client.stat(path)) as Versioned;
  } catch (err) {
    throw s3ErrorOf(err, () => noSuchKey(ctx.key!));
  }
}

/** Counts and MD5-hashes what passes: the single-part ETag. */
function md5Tap(): Transform & { hex(): string } {
  const md5 = createHash("md5");
  const t = new Transform({
    transform(chunk: Buffer, _enc, done) {
      md5.update(chunk);
      done(null, chunk);
    },
  }) as Transform & { hex(): string };
  let hex: string | undefined;
  t.hex = () => (hex ??= md5.digest("hex"));
  return t;
}

export async function putObject(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const path = objectPath(bucket, ctx.key!);
  const tap = md5Tap();
  const body = ctx.body().on("error", (err) => tap.destroy(err)).pipe(tap);
  const meta = metaFromHeaders(ctx.req.headers);
  // The ETag is known only once the body is read, and it goes with the commit: the write reads the body first.
  let etag = "";
  const source = (async function* () {
    for await (const piece of body) yield piece as Buffer;
    etag = tap.hex();
  })();
  await ctx.client.write(path, source, { meta: () => ({ ...meta, [META_ETAG]: etag }) }).catch((err) => Promise.reject(s3ErrorOf(err)));
  return { headers: { ETag: `"${etag}"` } };
}

/**
 * Resolves once `out` drains, fails with `gone()` if it closes first. Each wait takes its listeners away
 * again: a slow reader makes one wait per buffer-full, hundreds over a large object.
 */
export function drained(out: Writable, gone: () => Error): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onDrain = () => {
      out.off("close", onClose);
      resolve();
    };
    const onClose = () => {
      out.off("drain", onDrain);
      reject(gone());
    };
    out.once("drain", onDrain).once("close", onClose);
  });
}

/** Whether an If-Match style list ("*", or ETags quoted or not, comma-separated) names `etag`. */
function etagMatches(list: string, etag: string): boolean {
  return list.split(",").map((s) => s.trim()).some((t) => t === "*" || t === etag || `"${t}"` === etag);
}

/** If-Match, If-None-Match, If-Modified-Since and If-Unmodified-Since, as S3 applies them. */
function preconditions(ctx: Ctx, info: Versioned): Reply | undefined {
  const h = ctx.req.headers;
  const etag = etagOf(info);
  const matches = (list: string) => etagMatches(list, etag);
  const modified = Math.floor(info.mtime / 1000) * 1000;
  if (h["if-match"] && !matches(h["if-match"])) throw new S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412, { Condition: "If-Match" });
  if (!h["if-match"] && h["if-unmodified-since"] && modified > Date.parse(h["if-unmodified-since"])) {
    throw new S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412, { Condition: "If-Unmodified-Since" });
  }
  if (h["if-none-match"] && matches(h["if-none-match"])) return { status: 304, headers: { ETag: etag, "Last-Modified": new Date(info.mtime).toUTCString() } };
  if (!h["if-none-match"] && h["if-modified-since"] && modified <= Date.parse(h["if-modified-since"])) {
    return { status: 304, headers: { ETag: etag, "Last-Modified": new Date(info.mtime).toUTCString() } };
  }
  return undefined;
}

/** `bytes=a-b`, `bytes=a-`, `bytes=-n`; undefined for no (or several) ranges, which get the whole object. */
function rangeOf(header: string | undefined, size: number): { start: number; end: number } | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === "" && m[2] === "")) return undefined;
  let start: number;
  let end: number;
  if (m[1] === "") {
    start = Math.max(0, size - Number(m[2]));
    end = size;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size : Math.min(size, Number(m[2]) + 1);
  }
  if (start >= size || start >= end) {
    throw new S3Error("InvalidRange", "The requested range is not satisfiable", 416, { ActualObjectSize: String(size), RangeRequested: header });
  }
  return { start, end };
}

const OVERRIDES: Record<string, string> = {
  "response-content-type": "Content-Type", "response-content-language": "Content-Language", "response-expires": "Expires",
  "response-cache-control": "Cache-Control", "response-content-disposition": "Content-Disposition", "response-content-encoding": "Content-Encoding",
};

export async function getObject(ctx: Ctx, head = false): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const info = await stat(ctx, objectPath(bucket, ctx.key!));
  const early = preconditions(ctx, info);
  if (early) return early;
  const headers = objectHeaders(info);
  for (const [q, h] of Object.entries(OVERRIDES)) {
    const v = ctx.query.get(q);
    if (v !== null) headers[h] = v;
  }
  const range = rangeOf(ctx.req.headers.range, info.size);
  const length = range ? range.end - range.start : info.size;
  headers["Content-Length"] = length;
  if (range) headers["Content-Range"] = `bytes ${range.start}-${range.end - 1}/${info.size}`;
  const status = range ? 206 : 200;
  if (head) return { status, headers };
  return {
    status,
    headers,
    stream: (res) => ctx.client.readVersion(info, async (data) => {
      if (!res.write(data)) await drained(res, () => new S3Error("RequestTimeout", "the client went away", 400));
    }, range),
  };
}

/** GetObjectTagging: tags are never stored (a write that names some is refused), so every object's set is empty. */
export async function objectTagging(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  await stat(ctx, objectPath(bucket, ctx.key!));
  return { xml: xmlDocument("Tagging", { TagSet: {} }) };
}

export async function deleteObject(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const path = objectPath(bucket, ctx.key!);
  await ctx.client.rm(path).catch((err) => {
    const e = s3ErrorOf(err, () => new S3Error("NoSuchKey", "", 404));
    if (e.code !== "NoSuchKey") throw e; // deleting what is not there succeeds, as in S3
  });
  return { status: 204 };
}

export async function deleteObjects(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const doc = parseXml(await smallBody(ctx)) as { Delete?: { Object?: { Key?: string }[]; Quiet?: string } };
  const objects = doc.Delete?.Object ?? [];
  if (objects.length > 1000) throw new S3Error("MalformedXML", "At most 1000 keys can be deleted in one request", 400);
  const deleted: { Key: string }[] = [];
  const errors: { Key: string; Code: string; Message: string }[] = [];
  for (const o of objects) {
    const key = String(o.Key ?? "");
    try {
      await deleteObject({ ...ctx, key });
      deleted.push({ Key: key });
    } catch (err) {
      const e = s3ErrorOf(err);
      errors.push({ Key: key, Code: e.code, Message: e.message });
    }
  }
  const quiet = String(doc.Delete?.Quiet ?? "").trim() === "true";
  return { xml: xmlDocument("DeleteResult", { Deleted: quiet ? [] : deleted, Error: errors }) };
}

/**
 * The object x-amz-copy-source names ("bucket/key", URL-encoded, optionally with a leading "/"), once the
 * x-amz-copy-source-if-* conditions hold: each one that fails is 412, as S3 answers a copy.
 */
export async function copySource(ctx: Ctx): Promise<Versioned> {
  const header = String(ctx.req.headers["x-amz-copy-source"]);
  const q = header.indexOf("?");
  // A version of the source would be a version ID this gateway never hands out: not the current version instead.
  if (q >= 0 && new URLSearchParams(header.slice(q + 1)).has("versionId")) {
    throw new S3Error("NotImplemented", "A header or query you provided implies functionality that is not implemented: x-amz-copy-source versionId", 501);
  }
  let source: string;
  try {
    source = decodeURIComponent(q >= 0 ? header.slice(0, q) : header).replace(/^\//, "");
  } catch {
    throw new S3Error("InvalidArgument", "Copy Source must be URL-encoded", 400);
  }
  const slash = source.indexOf("/");
  if (slash <= 0) throw new S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey", 400);
  const [srcBucket, srcKey] = [source.slice(0, slash), source.slice(slash + 1)];
  if (!mayUse(ctx.scope, srcBucket)) throw new S3Error("AccessDenied", `This key may not read bucket ${srcBucket}`, 403);
  const info = await stat({ ...ctx, key: srcKey }, objectPath(srcBucket, srcKey));
  const h = ctx.req.headers;
  const one = (name: string) => (typeof h[name] === "string" ? (h[name] as string) : undefined);
  const etag = etagOf(info);
  const modified = Math.floor(info.mtime / 1000) * 1000;
  const failed = (condition: string) => new S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412, { Condition: condition });
  const ifMatch = one("x-amz-copy-source-if-match");
  const ifNoneMatch = one("x-amz-copy-source-if-none-match");
  const ifUnmodified = one("x-amz-copy-source-if-unmodified-since");
  const ifModified = one("x-amz-copy-source-if-modified-since");
  // As for GET: a matching If-Match overrides If-Unmodified-Since, and If-None-Match overrides If-Modified-Since.
  if (ifMatch !== undefined && !etagMatches(ifMatch, etag)) throw failed("x-amz-copy-source-If-Match");
  if (ifMatch === undefined && ifUnmodified !== undefined && modified > Date.parse(ifUnmodified)) throw failed("x-amz-copy-source-If-Unmodified-Since");
  if (ifNoneMatch !== undefined && etagMatches(ifNoneMatch, etag)) throw failed("x-amz-copy-source-If-None-Match");
  if (ifNoneMatch === undefined && ifModified !== undefined && modified <= Date.parse(ifModified)) throw failed("x-amz-copy-source-If-Modified-Since");
  return info;
}

/** CopyObject: the new object names the source's chunks, so no data moves. */
export async function copyObject(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const target = objectPath(bucket, ctx.key!);
  const info = await copySource(ctx);
  const replace = ctx.req.headers["x-amz-metadata-directive"] === "REPLACE";
  if (!replace && target === info.path) {
    throw new S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata.", 400);
  }
  const meta: Record<string, string> = replace ? metaFromHeaders(ctx.req.headers) : { ...(info.meta ?? {}) };
  const etag = info.meta?.[META_ETAG];
  if (etag) meta[META_ETAG] = etag;
  await ctx.client.commitChunks(target, { size: info.size, sha256: info.sha256, chunks: info.chunks.map((c) => c.hash) }, { meta })
    .catch((err: unknown) => Promise.reject(s3ErrorOf(err)));
  const copied = await stat(ctx, target);
  return { xml: xmlDocument("CopyObjectResult", { LastModified: new Date(copied.mtime).toISOString(), ETag: etagOf(copied) }) };
}
