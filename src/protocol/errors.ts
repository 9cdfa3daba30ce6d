/** Error codes that cross the wire; the receiver rebuilds a {@link DfsError} with the same code. */
export const ERROR_CODES = [
  "NOT_FOUND",
  "EXISTS",
  "LOCKED",
  "STALE_TOKEN",
  "CONFLICT",
  "NO_SPACE",
  "NOT_ENOUGH_NODES",
  "CORRUPT",
  "BAD_REQUEST",
  "FORBIDDEN",
  "UNAVAILABLE",
  "TIMEOUT",
  /** The caller gave up (an AbortSignal): unlike TIMEOUT, not a sign that the other side is slow or gone. */
  "CANCELLED",
  "BUSY",
  "INTERNAL",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The one error class of dfs: a stable `code` that tests and the CLI act on, and a message for people. */
export class DfsError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: ErrorOptions & { details?: Record<string, unknown> },
  ) {
    super(message, options);
    this.name = "DfsError";
    this.details = options?.details;
  }
  /** Structured facts for programs (e.g. a lock's holder and lease end). */
  readonly details?: Record<string, unknown>;
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}

/** Anything thrown that is not a DfsError becomes INTERNAL, keeping the original as `cause`. */
export function toDfsError(err: unknown): DfsError {
  if (err instanceof DfsError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new DfsError("INTERNAL", message, { cause: err });
}
