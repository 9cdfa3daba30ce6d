import { normalizePath } from "../protocol/common.js";
import { bucketNameProblem } from "../protocol/s3keys.js";
import { S3Error } from "./errors.js";

/** Where the gateway keeps multipart uploads in progress: a top-level folder no bucket can be named. */
export const UPLOADS_ROOT = "/.s3-uploads";
/** The file that makes an empty bucket's folder exist; not an object (S3 listings skip it). */
export const BUCKET_MARKER = ".s3-bucket";

export function validBucketName(name: string): boolean {
  return bucketNameProblem(name) === undefined;
}

export function checkBucketName(name: string): void {
  const problem = bucketNameProblem(name);
  if (problem) throw new S3Error("InvalidBucketName", `The specified bucket is not valid: ${problem}`, 400, { BucketName: name });
}

/**
 * The dfs path of an object. S3 keys are any UTF-8 text, dfs paths are folders and names: a key that
 * does not map one to one (an empty part "a//b", "." or "..", a trailing "/") is refused rather than
 * stored under another name.
 */
export function objectPath(bucket: string, key: string): string {
  if (key === "") throw new S3Error("InvalidArgument", "An object key is required.", 400);
  if (Buffer.byteLength(key) > 1024) throw new S3Error("KeyTooLongError", "Your key is too long.", 400);
  const wanted = `/${bucket}/${key}`;
  let path: string;
  try {
    path = normalizePath(wanted);
  } catch (err) {
    throw new S3Error("InvalidArgument", `This gateway cannot store the key ${JSON.stringify(key)}: ${(err as Error).message}`, 400);
  }
  if (path !== wanted || key === BUCKET_MARKER) {
    throw new S3Error("InvalidArgument", `This gateway cannot store the key ${JSON.stringify(key)} (empty parts, "." and "..", a trailing "/" and the name ${BUCKET_MARKER} are not kept as given)`, 400);
  }
  return path;
}

/** The key of a dfs path under a bucket's folder. */
export function keyOf(bucket: string, path: string): string {
  return path.slice(bucket.length + 2);
}
