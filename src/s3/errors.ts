/**
 * An authentication or body-integrity failure, carrying the S3 error code and HTTP status that the
 * gateway answers with. Kept in its own module so that the request verifier and the body decoders
 * can both raise it without importing each other.
 */
export class S3AuthError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = "S3AuthError";
  }
}
