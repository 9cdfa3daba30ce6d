import type { DfsClient } from "../roles/client.js";
import { LAST_CHAR } from "../roles/directory/rules.js";
import { mayUse, smallBody, type Ctx, type Reply } from "./context.js";
import { noSuchBucket, S3Error, s3ErrorOf } from "./errors.js";
import { BUCKET_MARKER, checkBucketName, validBucketName } from "./names.js";
import { xmlDocument } from "./xml.js";

/** Buckets seen to exist lately: an object write checks its bucket, and most writes go to a few buckets. */
const known = new Map<string, number>();
const KNOWN_MS = 5000;

export async function bucketExists(client: DfsClient, bucket: string): Promise<boolean> {
  const seen = known.get(bucket);
  if (seen !== undefined && Date.now() - seen < KNOWN_MS) return true;
  const exists = (await client.ls(`/${bucket}/`, { limit: 1 })).length > 0;
  if (exists) known.set(bucket, Date.now());
  else known.delete(bucket);
  return exists;
}

export async function requireBucket(ctx: Ctx): Promise<string> {
  const bucket = ctx.bucket!;
  if (!(await bucketExists(ctx.client, bucket).catch((err) => Promise.reject(s3ErrorOf(err))))) throw noSuchBucket(bucket);
  return bucket;
}

/** Every top-level folder with a valid bucket name, one directory request each: jumps over each folder's files. */
export async function listBuckets(ctx: Ctx): Promise<Reply> {
  const buckets: { Name: string; CreationDate: string }[] = [];
  let after = "";
  for (;;) {
    const [first] = await ctx.client.ls("/", { after, limit: 1 });
    if (!first) break;
    const rest = first.path.slice(1);
    const slash = rest.indexOf("/");
    if (slash < 0) {
      after = first.path; // a file at the top level is no bucket
      continue;
    }
    const name = rest.slice(0, slash);
    if (validBucketName(name) && mayUse(ctx.scope, name)) buckets.push({ Name: name, CreationDate: new Date(first.mtime).toISOString() });
    after = `/${name}/${LAST_CHAR}`;
  }
  return {
    xml: xmlDocument("ListAllMyBucketsResult", {
      Owner: { ID: ctx.scope.id, DisplayName: ctx.scope.id },
      Buckets: { Bucket: buckets },
    }),
  };
}

export async function createBucket(ctx: Ctx): Promise<Reply> {
  const bucket = ctx.bucket!;
  checkBucketName(bucket);
  await smallBody(ctx); // a CreateBucketConfiguration names a region; the cluster is one
  if (!(await bucketExists(ctx.client, bucket))) await ctx.client.write(`/${bucket}/${BUCKET_MARKER}`, [Buffer.alloc(0)]);
  known.set(bucket, Date.now());
  return { headers: { Location: `/${bucket}` } };
}

export async function headBucket(ctx: Ctx): Promise<Reply> {
  await requireBucket(ctx);
  return {};
}

export async function deleteBucket(ctx: Ctx): Promise<Reply> {
  const bucket = ctx.bucket!;
  const files = await ctx.client.ls(`/${bucket}/`, { limit: 2 });
  if (files.length === 0) throw noSuchBucket(bucket);
  if (files.some((f) => f.path !== `/${bucket}/${BUCKET_MARKER}`)) {
    throw new S3Error("BucketNotEmpty", "The bucket you tried to delete is not empty", 409, { BucketName: bucket });
  }
  await ctx.client.rm(`/${bucket}/${BUCKET_MARKER}`);
  known.delete(bucket);
  return { status: 204 };
}

export async function bucketLocation(ctx: Ctx): Promise<Reply> {
  await requireBucket(ctx);
  return { xml: xmlDocument("LocationConstraint", {}) };
}

/**
 * GetBucketVersioning: never enabled. A dfs file keeps its versions, but the gateway names none of them
 * (no version IDs, a delete removes the file), which is S3's bucket that never had versioning turned on.
 */
export async function bucketVersioning(ctx: Ctx): Promise<Reply> {
  await requireBucket(ctx);
  return { xml: xmlDocument("VersioningConfiguration", {}) };
}
