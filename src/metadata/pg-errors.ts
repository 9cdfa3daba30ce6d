import postgres from "postgres";
import { DfsError } from "../protocol/errors.js";

/**
 * What a failed statement or connection means for the transaction it belonged to:
 * - `serialization`: PostgreSQL rolled it back to keep transactions serializable (40001), to
 *   break a deadlock (40P01) or for want of room for its locks (53200); running it again is what
 *   the server asks for.
 * - `connection`: the connection is gone, never came, or the server is shutting down or starting;
 *   whatever was not committed is rolled back by the server.
 * - `login`: the server refused us for good (password, unknown database): retrying cannot help.
 * - `statement`: anything else, e.g. a unique violation, or the caller's own error.
 */
export type Failure = "serialization" | "connection" | "login" | "statement";

/** Error codes of Node's sockets and of postgres.js for connections that failed or ended. */
const SOCKET_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EADDRNOTAVAIL",
  "ENOENT", // a unix socket that is not there
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECTION_ENDED",
  "CONNECT_TIMEOUT",
]);

export function classify(err: unknown): Failure {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return "statement";
  if (err instanceof postgres.PostgresError) {
    // 53200: out of shared memory, above all the table of serializable transactions' predicate locks; the
    // transaction was rolled back, and there is room again once the transactions that hold them end.
    if (code === "40001" || code === "40P01" || code === "53200") return "serialization";
    // 08: connection exceptions; 57P01-57P03: shut down by an administrator, crashed, not yet
    // taking connections; 53300: too many connections; 25006: a server that does not take writes.
    if (code.startsWith("08") || ["57P01", "57P02", "57P03", "53300", "25006"].includes(code)) return "connection";
    if (code.startsWith("28") || code === "3D000") return "login";
    return "statement";
  }
  return SOCKET_CODES.has(code) ? "connection" : "statement";
}

/** The SQLSTATE of a PostgreSQL error, for details and logs. */
export function sqlState(err: unknown): string | undefined {
  return err instanceof postgres.PostgresError ? err.code : undefined;
}

/**
 * The error of a COMMIT whose fate is not known: the connection was lost after COMMIT was sent, or
 * the server said the transaction committed locally but its synchronous replication was cut short.
 * It may be visible (and on a standby promoted later, or not), so it is neither a success nor safe
 * to run again blindly.
 */
export function outcomeUnknown(why: string, cause?: unknown): DfsError {
  return new DfsError("UNAVAILABLE", `the metadata database may or may not have committed this change (${why}); its outcome is unknown`, {
    cause,
    details: { outcome: "unknown" },
  });
}

/** True for the error of {@link outcomeUnknown}, also once it has crossed the wire. */
export function isOutcomeUnknown(err: unknown): boolean {
  return err instanceof DfsError && err.code === "UNAVAILABLE" && err.details?.outcome === "unknown";
}

/** A one-line account of an error for messages, with its SQLSTATE or socket code. */
export function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}
