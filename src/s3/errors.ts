import { toDfsError } from "../protocol/errors.js";

/** An S3 error: its code, message and HTTP status (and extra elements), sent as S3's XML error document. */
export class S3Error extends Error {
  constructor(readonly code: string, message: string, readonly status: number, readonly extra: Record<string, string> = {}) {
    super(message);
    this.name = "S3Error";
  }
}

/**
 * A refusal by the request verifier or a body decoder (a signature, a checksum, the framing): an S3Error, told
 * apart so that callers and tests can see the request never reached an operation.
 */
export class S3AuthError extends S3Error {
  constructor(code: string, message: string, status: number) {
    super(code, message, status);
    this.name = "S3AuthError";
  }
}

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
