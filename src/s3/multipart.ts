import { createHash, randomBytes } from "node:crypto";
import { PassThrough } from "node:stream";
import type { FileInfo } from "../protocol/directory.js";
import { requireBucket } from "./buckets.js";
import { mayUse, smallBody, type Ctx, type Reply } from "./context.js";
import { S3Error, s3ErrorOf } from "./errors.js";
import { META_ETAG } from "./etag.js";
import { copySource, drained, metaFromHeaders, stat } from "./objects.js";
import { objectPath, UPLOADS_ROOT } from "./names.js";
import { LAST_CHAR } from "../roles/directory/rules.js";
import { parseXml, xmlDocument } from "./xml.js";

/**
 * Multipart uploads live in the namespace while they last: UPLOADS/ID/upload describes the upload, and
 * each part is a file UPLOADS/ID/part-NNNNN whose chunks become the object's when the upload completes,
 * so completing moves no data, and an upload survives a restart of the gateway.
 */
interface Upload {
  bucket: string;
  key: string;
  initiated: number;
  meta: Record<string, string>;
}

const MIN_PART = 5 * 1024 * 1024;
const partName = (n: number) => `part-${String(n).padStart(5, "0")}`;
const noSuchUpload = (id: string) => new S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.", 404, { UploadId: id });

function uploadDir(id: string): string {
  if (!/^[0-9a-f]{32}$/.test(id)) throw noSuchUpload(id);
  return `${UPLOADS_ROOT}/${id}`;
}

async function readText(ctx: Ctx, path: string): Promise<string> {
  const parts: Buffer[] = [];
  await ctx.client.read(path, async (d) => void parts.push(d));
  return Buffer.concat(parts).toString("utf8");
}

/** The upload `id`, checked to belong to the request's bucket and key. */
async function openUpload(ctx: Ctx, id: string): Promise<Upload> {
  let u: Upload;
  try {
    u = JSON.parse(await readText(ctx, `${uploadDir(id)}/upload`)) as Upload;
  } catch (err) {
    throw s3ErrorOf(err, () => noSuchUpload(id));
  }
  if (u.bucket !== ctx.bucket || u.key !== ctx.key) throw noSuchUpload(id);
  return u;
}

export async function createUpload(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  objectPath(bucket, ctx.key!); // refuse a key that cannot be stored now, not at completion
  const id = randomBytes(16).toString("hex");
  const upload: Upload = { bucket, key: ctx.key!, initiated: Date.now(), meta: metaFromHeaders(ctx.req.headers) };
  await ctx.client.write(`${uploadDir(id)}/upload`, [Buffer.from(JSON.stringify(upload))]).catch((err) => Promise.reject(s3ErrorOf(err)));
  return { xml: xmlDocument("InitiateMultipartUploadResult", { Bucket: bucket, Key: ctx.key!, UploadId: id }) };
}

function partNumber(ctx: Ctx): number {
  const n = Number(ctx.query.get("partNumber"));
  if (!Number.isInteger(n) || n < 1 || n > 10000) throw new S3Error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive", 400);
  return n;
}

/**
 * Stores part `n` of upload `id` from `open`'s bytes, with their MD5 as the part's ETag. `open` is called
 * again if the write must start over (a copy's source can be read again; a request body cannot).
 */
async function storePart(ctx: Ctx, id: string, n: number, open: () => AsyncIterable<Buffer>, again: boolean): Promise<string> {
  let etag = "";
  const source = () => (async function* () {
    const md5 = createHash("md5");
    for await (const piece of open()) {
      md5.update(piece);
      yield piece;
    }
    etag = md5.digest("hex");
  })();
  await ctx.client.write(`${uploadDir(id)}/${partName(n)}`, again ? source : source(), { meta: () => ({ [META_ETAG]: etag }) })
    .catch((err) => Promise.reject(s3ErrorOf(err)));
  return etag;
}

export async function uploadPart(ctx: Ctx): Promise<Reply> {
  const id = ctx.query.get("uploadId")!;
  const n = partNumber(ctx);
  await openUpload(ctx, id);
  const body = ctx.body() as AsyncIterable<Buffer>;
  return { headers: { ETag: `"${await storePart(ctx, id, n, () => body, false)}"` } };
}

/** x-amz-copy-source-range: `bytes=first-last`, both given and inside the source; none: the whole source. */
function copyRange(header: unknown, size: number): { start: number; end: number } | undefined {
  if (header === undefined) return undefined;
  const m = /^bytes=(\d+)-(\d+)$/.exec(String(header).trim());
  if (!m) {
    throw new S3Error("InvalidArgument", "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy", 400);
  }
  const [start, last] = [Number(m[1]), Number(m[2])];
  if (start > last || last >= size) throw new S3Error("InvalidArgument", `Range specified is not valid for source object of size: ${size}`, 400);
  return { start, end: last + 1 };
}

/** Bytes [start, end) of a version, read as the consumer pulls them: the read waits while the consumer is behind. */
function versionBytes(ctx: Ctx, info: FileInfo, range?: { start: number; end: number }): AsyncIterable<Buffer> {
  return (async function* () {
    const pipe = new PassThrough();
    const abandoned = () => new Error("the copy stopped reading");
    const reading = ctx.client.readVersion(info, async (data) => {
      if (pipe.destroyed) throw abandoned();
      if (!pipe.write(data)) await drained(pipe, abandoned);
    }, range).then(() => void pipe.end(), (err: unknown) => void pipe.destroy(err as Error));
    try {
      for await (const piece of pipe) yield piece as Buffer;
    } finally {
      pipe.destroy();
      await reading;
    }
  })();
}

/**
 * UploadPartCopy: the part is the source's bytes (the AWS CLI copies a large object from one key to another
 * this way). Unlike CopyObject, the data moves: a part's chunks are its own, cut where the part starts.
 */
export async function uploadPartCopy(ctx: Ctx): Promise<Reply> {
  const id = ctx.query.get("uploadId")!;
  const n = partNumber(ctx);
  await openUpload(ctx, id);
  const info = await copySource(ctx);
  const range = copyRange(ctx.req.headers["x-amz-copy-source-range"], info.size);
  const etag = await storePart(ctx, id, n, () => versionBytes(ctx, info, range), true);
  const part = await stat({ ...ctx, key: partName(n) }, `${uploadDir(id)}/${partName(n)}`);
  return { xml: xmlDocument("CopyPartResult", { LastModified: new Date(part.mtime).toISOString(), ETag: `"${etag}"` }) };
}

interface PartInfo {
  n: number;
  etag: string;
  size: number;
  mtime: number;
}

async function partsOf(ctx: Ctx, id: string): Promise<PartInfo[]> {
  const entries = await ctx.client.ls(`${uploadDir(id)}/part-`, { limit: 10000, meta: true });
  return entries.map((e) => ({
    n: Number(e.path.slice(e.path.lastIndexOf("-") + 1)),
    etag: (e as { meta?: Record<string, string> }).meta?.[META_ETAG] ?? "",
    size: e.size,
    mtime: e.mtime,
  }));
}

export async function listParts(ctx: Ctx): Promise<Reply> {
  const id = ctx.query.get("uploadId")!;
  await openUpload(ctx, id);
  const marker = Number(ctx.query.get("part-number-marker") ?? 0);
  const max = Math.min(1000, Number(ctx.query.get("max-parts") ?? 1000));
  const all = (await partsOf(ctx, id)).filter((p) => p.n > marker);
  const parts = all.slice(0, max);
  const truncated = all.length > parts.length;
  return {
    xml: xmlDocument("ListPartsResult", {
      Bucket: ctx.bucket!, Key: ctx.key!, UploadId: id,
      PartNumberMarker: marker, ...(truncated ? { NextPartNumberMarker: parts.at(-1)!.n } : {}),
      MaxParts: max, IsTruncated: truncated, StorageClass: "STANDARD",
      Part: parts.map((p) => ({ PartNumber: p.n, LastModified: new Date(p.mtime).toISOString(), ETag: `"${p.etag}"`, Size: p.size })),
    }),
  };
}

export async function completeUpload(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const id = ctx.query.get("uploadId")!;
  const upload = await openUpload(ctx, id);
  const doc = parseXml(await smallBody(ctx)) as { CompleteMultipartUpload?: { Part?: { PartNumber?: string; ETag?: string }[] } };
  const asked = (doc.CompleteMultipartUpload?.Part ?? []).map((p) => ({ n: Number(p.PartNumber), etag: String(p.ETag ?? "").trim().replace(/"/g, "") }));
  if (asked.length === 0) throw new S3Error("MalformedXML", "You must specify at least one part", 400);
  const have = new Map((await partsOf(ctx, id)).map((p) => [p.n, p]));
  for (let i = 1; i < asked.length; i++) {
    if (asked[i]!.n <= asked[i - 1]!.n) throw new S3Error("InvalidPartOrder", "The list of parts was not in ascending order. The parts list must be specified in order by part number.", 400);
  }
  for (let i = 0; i < asked.length; i++) {
    const a = asked[i]!;
    const p = have.get(a.n);
    if (!p || p.etag !== a.etag) throw new S3Error("InvalidPart", "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.", 400, { PartNumber: String(a.n) });
    if (i < asked.length - 1 && p.size < MIN_PART) throw new S3Error("EntityTooSmall", "Your proposed upload is smaller than the minimum allowed object size.", 400, { PartNumber: String(a.n) });
  }
  // The object's chunks are the parts' chunks; its SHA-256 is read from them in order (no data is written).
  const infos = await Promise.all(asked.map((a) => stat({ ...ctx, key: partName(a.n) }, `${uploadDir(id)}/${partName(a.n)}`)));
  const whole = createHash("sha256");
  for (const info of infos) await ctx.client.readVersion(info, async (d) => void whole.update(d));
  const md5s = Buffer.concat(asked.map((a) => Buffer.from(a.etag, "hex")));
  const etag = `${createHash("md5").update(md5s).digest("hex")}-${asked.length}`;
  const path = objectPath(bucket, upload.key);
  await ctx.client.commitChunks(path, {
    size: infos.reduce((s, i) => s + i.size, 0),
    sha256: whole.digest("hex"),
    chunks: infos.flatMap((i) => i.chunks.map((c) => c.hash)),
  }, { meta: { ...upload.meta, [META_ETAG]: etag } }).catch((err: unknown) => Promise.reject(s3ErrorOf(err)));
  await removeUpload(ctx, id);
  return { xml: xmlDocument("CompleteMultipartUploadResult", { Location: `/${bucket}/${upload.key}`, Bucket: bucket, Key: upload.key, ETag: `"${etag}"` }) };
}

/** Removes an upload's parts, then its description (so an upload half removed is still listed and can be aborted again). */
async function removeUpload(ctx: Ctx, id: string): Promise<void> {
  for (const e of await ctx.client.ls(`${uploadDir(id)}/part-`, { limit: 10000 })) await ctx.client.rm(e.path).catch(() => undefined);
  await ctx.client.rm(`${uploadDir(id)}/upload`).catch((err) => Promise.reject(s3ErrorOf(err, () => noSuchUpload(id))));
}

export async function abortUpload(ctx: Ctx): Promise<Reply> {
  const id = ctx.query.get("uploadId")!;
  await openUpload(ctx, id);
  await removeUpload(ctx, id);
  return { status: 204 };
}

export async function listUploads(ctx: Ctx): Promise<Reply> {
  const bucket = await requireBucket(ctx);
  const prefix = ctx.query.get("prefix") ?? "";
  const uploads: { Key: string; UploadId: string; Initiated: string; StorageClass: string }[] = [];
  let after = "";
  for (;;) {
    const [first] = await ctx.client.ls(`${UPLOADS_ROOT}/`, { after, limit: 1 });
    if (!first) break;
    const id = first.path.slice(UPLOADS_ROOT.length + 1).split("/")[0]!;
    after = `${UPLOADS_ROOT}/${id}/${LAST_CHAR}`;
    try {
      const u = JSON.parse(await readText(ctx, `${UPLOADS_ROOT}/${id}/upload`)) as Upload;
      if (u.bucket === bucket && u.key.startsWith(prefix) && mayUse(ctx.scope, u.bucket)) {
        uploads.push({ Key: u.key, UploadId: id, Initiated: new Date(u.initiated).toISOString(), StorageClass: "STANDARD" });
      }
    } catch {
      // A part without its description: an upload being removed.
    }
  }
  uploads.sort((a, b) => (a.Key < b.Key ? -1 : a.Key > b.Key ? 1 : 0));
  return {
    xml: xmlDocument("ListMultipartUploadsResult", {
      Bucket: bucket, KeyMarker: "", UploadIdMarker: "", Prefix: prefix, MaxUploads: 1000, IsTruncated: false,
      Upload: uploads.map((u) => ({ ...u, Initiator: { ID: ctx.scope.id, DisplayName: ctx.scope.id }, Owner: { ID: ctx.scope.id, DisplayName: ctx.scope.id } })),
    }),
  };
}
