import { bucketLocation, bucketVersioning, createBucket, deleteBucket, headBucket, listBuckets } from "./buckets.js";
import type { Ctx, Reply } from "./context.js";
import { listObjectsV1, listObjectsV2 } from "./listing.js";
import { abortUpload, completeUpload, createUpload, listParts, listUploads, uploadPart, uploadPartCopy } from "./multipart.js";
import { copyObject, deleteObject, deleteObjects, getObject, objectTagging, putObject } from "./objects.js";
import { S3Error } from "./errors.js";

type Op = (ctx: Ctx) => Promise<Reply>;

/**
 * Query parameters an operation may carry without changing what it is. Any other sub-resource (?acl,
 * ?tagging, ?versioning, ...) is an operation this gateway does not serve: NotImplemented, never the
 * answer of another operation.
 */
const PLAIN = new Set([
  "prefix", "delimiter", "max-keys", "continuation-token", "start-after", "marker", "encoding-type", "fetch-owner", "list-type",
  "x-id", "partNumber", "uploadId", "max-parts", "part-number-marker", "max-uploads", "key-marker", "upload-id-marker",
  "response-content-type", "response-content-language", "response-expires", "response-cache-control",
  "response-content-disposition", "response-content-encoding",
  "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token",
  "X-Amz-Content-Sha256", "x-amz-checksum-mode",
]);

/**
 * A write's option that this gateway would store nothing for: answered NotImplemented rather than taken and
 * dropped. Every object is private to the keys of its bucket and stored alike, so a private ACL (rclone sends
 * it with every write) and the STANDARD class are what is done anyway.
 */
function unhonoured(headers: Record<string, unknown>): string | undefined {
  const value = (name: string) => (typeof headers[name] === "string" ? (headers[name] as string) : "");
  const acl = value("x-amz-acl");
  if (acl && acl !== "private" && acl !== "bucket-owner-full-control") return `x-amz-acl: ${acl}`;
  const storageClass = value("x-amz-storage-class");
  if (storageClass && storageClass !== "STANDARD") return `x-amz-storage-class: ${storageClass}`;
  if (value("x-amz-bucket-object-lock-enabled").toLowerCase() === "true") return "x-amz-bucket-object-lock-enabled";
  return Object.keys(headers).find((h) =>
    h.startsWith("x-amz-grant-") || h.startsWith("x-amz-server-side-encryption") || h.startsWith("x-amz-object-lock-") || h === "x-amz-website-redirect-location");
}

function notImplemented(what: string): S3Error {
  return new S3Error("NotImplemented", `A header or query you provided implies functionality that is not implemented: ${what}`, 501);
}

/** The operation a request names: method, bucket or object, and its sub-resource. */
export function route(method: string, bucket: string | undefined, key: string | undefined, query: URLSearchParams, headers: Record<string, unknown>): Op {
  const has = (q: string) => query.has(q);
  const extra = [...query.keys()].filter((k) => !PLAIN.has(k) && !["uploads", "delete", "location", "versioning", "tagging"].includes(k));
  if (extra.length > 0) return () => Promise.reject(notImplemented(`?${extra[0]}`));
  // Reading the state is served (rclone asks before deleting); setting it is not.
  if (has("versioning")) return method === "GET" && bucket !== undefined && key === undefined ? bucketVersioning : () => Promise.reject(notImplemented("?versioning"));
  // An object has no tags, and none can be set, so an empty set is the truth (the AWS CLI asks before copying one).
  if (has("tagging")) return method === "GET" && key !== undefined ? objectTagging : () => Promise.reject(notImplemented("?tagging"));
  if (typeof headers["x-amz-tagging"] === "string" && headers["x-amz-tagging"] !== "") return () => Promise.reject(notImplemented("x-amz-tagging"));
  const dropped = method === "PUT" || method === "POST" ? unhonoured(headers) : undefined;
  if (dropped) return () => Promise.reject(notImplemented(dropped));
  if (has("versionId")) return () => Promise.reject(notImplemented("versionId"));
  if (bucket === undefined) {
    if (method === "GET") return listBuckets;
  } else if (key === undefined) {
    if (method === "GET" && has("uploads")) return listUploads;
    if (method === "GET" && has("location")) return bucketLocation;
    if (method === "GET") return query.get("list-type") === "2" ? listObjectsV2 : listObjectsV1;
    if (method === "PUT") return createBucket;
    if (method === "HEAD") return headBucket;
    if (method === "DELETE") return deleteBucket;
    if (method === "POST" && has("delete")) return deleteObjects;
  } else {
    if (method === "PUT" && has("uploadId")) return headers["x-amz-copy-source"] ? uploadPartCopy : uploadPart;
    if (method === "PUT") return headers["x-amz-copy-source"] ? copyObject : putObject;
    if (method === "GET" && has("uploadId")) return listParts;
    if (method === "GET") return (ctx) => getObject(ctx);
    if (method === "HEAD") return (ctx) => getObject(ctx, true);
    if (method === "DELETE" && has("uploadId")) return abortUpload;
    if (method === "DELETE") return deleteObject;
    if (method === "POST" && has("uploads")) return createUpload;
    if (method === "POST" && has("uploadId")) return completeUpload;
  }
  return () => Promise.reject(new S3Error("MethodNotAllowed", `The specified method is not allowed against this resource: ${method}`, 405));
}
