import { toDfsError } from "../protocol/errors.js";
import { S3Error } from "./xml.js";

/** The S3 error for a failure of the cluster under an operation; `notFound` names what was missing. */
export function s3ErrorOf(err: unknown, notFound: () => S3Error = () => new S3Error("NoSuchKey", "The specified key does not exist.", 404)): S3Error {
  if (err instanceof S3Error) return err;
  const e = toDfsError(err);
  switch (e.code) {
    case "NOT_FOUND":
      return notFound();
    case "BAD_REQUEST":
      return new S3Error("InvalidArgument", e.message, 400);
    case "FORBIDDEN":
      return new S3Error("AccessDenied", e.message, 403);
    case "CONFLICT":
    case "LOCKED":
    case "STALE_TOKEN":
      return new S3Error("OperationAborted", `A conflicting operation is in progress on this object: ${e.message}`, 409);
    case "NO_SPACE":
      return new S3Error("ServiceUnavailable", `The cluster has no room: ${e.message}`, 503);
    case "UNAVAILABLE":
    case "NOT_ENOUGH_NODES":
    case "BUSY":
    case "TIMEOUT":
      return new S3Error("ServiceUnavailable", e.message, 503);
    default:
      return new S3Error("InternalError", "We encountered an internal error. Please try again.", 500);
  }
}

export const noSuchBucket = (bucket: string) => new S3Error("NoSuchBucket", "The specified bucket does not exist", 404, { BucketName: bucket });
export const noSuchKey = (key: string) => new S3Error("NoSuchKey", "The specified key does not exist.", 404, { Key: key });
