import { setTimeout as sleep } from "node:timers/promises";
import postgres from "postgres";
import { logger, type Logger } from "../log.js";
import { DfsError } from "../protocol/errors.js";
import { classify, describe, outcomeUnknown, sqlState } from "./pg-errors.js";
import { ConnPool, type Conn, type Notice } from "./pg-pool.js";
import { parsePgUrl, redact } from "./pg-url.js";
import { numberPlaceholders } from "./placeholders.js";
import type { Param, Row, Tx } from "./tx.js";

export { isOutcomeUnknown } from "./pg-errors.js";

/** How {@link openPostgres} behaves; every field has a default. */
export interface PostgresOptions {
  log?: Logger;
  /** Connections kept, each running one transaction at a time. Default 4. */
  connections?: number;
  /** How long one `transact` may take, retries included, unless the call says otherwise. Default 10 s. */
  timeoutMs?: number;
  /** How long one attempt to open a connection may take. Default 5 s. */
  connectTimeoutMs?: number;
  /** Serialization failures in a row after which a transaction gives up (BUSY). Default 50. */
  maxSerializationRetries?: number;
}

export interface TransactOptions {
  /**
   * A transaction that only reads: it runs READ ONLY at REPEATABLE READ, one snapshot for all its
   * statements, and takes none of the predicate locks a serializable one keeps until its overlapping
   * transactions end (the server's table of them is bounded; readers filling it fail writers).
   */
  readOnly?: boolean;
  /** This call's deadline, retries included (default: the back end's `timeoutMs`). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Counters since the back end was opened. */
export interface PostgresStats {
  /** Transactions committed and reported as such. */
  commits: number;
  /** Attempts rolled back by a serialization failure or a deadlock and run again. */
  serializationRetries: number;
  /** Attempts whose connection failed before COMMIT was sent, run again on a fresh connection. */
  connectionRetries: number;
  /** Transactions reported as failed because their COMMIT's outcome is unknown. */
  unknownOutcomes: number;
  /** Connections open now. */
  connections: number;
  /** The server new connections go to (`host:port`). */
  server: string;
}

/** Metadata kept in PostgreSQL (or a database that speaks its protocol and SQL). */
export interface PostgresBackend {
  /** The URL, password hidden. */
  readonly url: string;
  /**
   * Runs `fn` in one SERIALIZABLE transaction (or a read-only one, see {@link TransactOptions.readOnly})
   * and answers its result once COMMIT has returned.
   * The whole of `fn` runs again, on a fresh transaction, after a serialization failure or a
   * deadlock, and after losing the connection before COMMIT was sent (nothing was committed then);
   * so `fn` must do nothing but its statements. Fails UNAVAILABLE when no server takes the
   * transaction before the deadline, with `details.outcome = "unknown"` (see
   * {@link isOutcomeUnknown}) when COMMIT was sent but its outcome is not known, TIMEOUT when the
   * transaction ran past its deadline, CANCELLED on `signal`, BUSY after too many serialization
   * failures in a row. Errors of `fn` itself, and PostgreSQL errors other than those (e.g. a unique
   * violation, SQLSTATE 23505 in `code`), reject it unchanged after the rollback.
   */
  transact<T>(fn: (tx: Tx) => Promise<T>, opts?: TransactOptions): Promise<T>;
  stats(): PostgresStats;
  /** Closes every connection; transactions still running fail. Idempotent. */
  close(): Promise<void>;
}

/**
 * Opens the PostgreSQL back end for a URL such as
 * `postgres://dfs@db1:5432,db2:5432/dfs?target_session_attrs=read-write`. No connection is made
 * until the first transaction; a URL that cannot be read is BAD_REQUEST at once.
 */
export function openPostgres(url: string, opts: PostgresOptions = {}): PostgresBackend {
  return new PgBackend(url, opts);
}

/** The database's clock (`clock_timestamp()`) in milliseconds since 1970: lease ends are taken from it, not from any process's clock. */
export async function now(tx: Tx): Promise<number> {
  const row = await tx.get("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint");
  return row![0] as number;
}

/** Why a transaction's AbortController fired. */
const DEADLINE = Symbol("deadline");
const CANCELLED = Symbol("cancelled");

/** Where an attempt stood: before BEGIN had been answered, running `fn`, or with COMMIT sent. */
type Phase = "begin" | "work" | "commit";

/** One transact call's retries so far. */
interface Retries {
  serialization: number;
  connection: number;
  timeoutMs: number;
  last?: { kind: "serialization" | "connection"; err: unknown };
}

type Attempt<T> = { done: true; value: T } | { done: false; kind: "serialization" | "connection"; err: unknown };

class PgBackend implements PostgresBackend {
  readonly url: string;
  private readonly log: Logger;
  private readonly pool: ConnPool;
  private readonly hosts: number;
  private readonly primaryOnly: boolean;
  private readonly timeoutMs: number;
  private readonly maxSerializationRetries: number;
  private readonly counts = { commits: 0, serializationRetries: 0, connectionRetries: 0, unknownOutcomes: 0 };

  constructor(url: string, opts: PostgresOptions) {
    const target = parsePgUrl(url);
    this.url = redact(url);
    this.log = opts.log ?? logger("metadata:postgres");
    this.hosts = target.hosts.length;
    this.primaryOnly = target.primaryOnly;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.maxSerializationRetries = opts.maxSerializationRetries ?? 50;
    this.pool = new ConnPool(target, opts.connections ?? 4, opts.connectTimeoutMs ?? 5_000, this.log);
  }

  async transact<T>(fn: (tx: Tx) => Promise<T>, opts: TransactOptions = {}): Promise<T> {
    const retries: Retries = { serialization: 0, connection: 0, timeoutMs: opts.timeoutMs ?? this.timeoutMs };
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(DEADLINE), retries.timeoutMs);
    const cancel = () => ctl.abort(CANCELLED);
    if (opts.signal?.aborted) cancel();
    opts.signal?.addEventListener("abort", cancel, { once: true });
    try {
      for (;;) {
        const conn = await this.pool.acquire(ctl.signal).catch((err) => {
          throw this.stopped(err, retries, this.pool.lastConnectionError);
        });
        const attempt = await this.attempt(conn, fn, ctl.signal, retries, opts.readOnly);
        if (attempt.done) return attempt.value;
        await this.pause(attempt, retries, ctl.signal);
      }
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", cancel);
    }
  }

  /** Runs `fn` once on `conn`: its result, a failure worth another attempt, or (thrown) a final error. */
  private async attempt<T>(conn: Conn, fn: (tx: Tx) => Promise<T>, signal: AbortSignal, retries: Retries, readOnly = false): Promise<Attempt<T>> {
    let phase: Phase = "begin";
    const run = conn.sql.begin(readOnly ? "isolation level repeatable read read only" : "isolation level serializable", async (sql) => {
      phase = "work";
      const value = await fn(txOf(sql));
      phase = "commit";
      conn.commitNotices = [];
      return value;
    });
    let value: T;
    try {
      value = (await untilAborted(run, signal)) as T;
    } catch (err) {
      conn.commitNotices = undefined;
      if (err === DEADLINE || err === CANCELLED) {
        run.catch(() => {});
        return this.abandon(conn, err, phase, retries);
      }
      return this.failed(conn, err, phase);
    }
    const warning = (conn.commitNotices ?? []).find((n) => (n.severity ?? n.severity_local) === "WARNING");
    conn.commitNotices = undefined;
    this.pool.release(conn);
    if (warning) throw this.unknown(`the server warned at COMMIT: ${noticeText(warning)}`);
    this.pool.succeeded(conn);
    this.counts.commits++;
    return { done: true, value };
  }

  /** An attempt that failed: what its error says about the transaction, and about `conn`. */
  private failed(conn: Conn, err: unknown, phase: Phase): Attempt<never> {
    const kind = classify(err);
    if (phase === "commit") {
      // An error PostgreSQL answered to COMMIT itself means it rolled back; anything else, above
      // all a connection lost once COMMIT was on its way, leaves the outcome open.
      if (err instanceof postgres.PostgresError && kind !== "connection") {
        this.pool.release(conn);
        if (kind === "serialization") return { done: false, kind, err };
        throw err;
      }
      this.pool.discard(conn);
      throw this.unknown(`the connection failed during COMMIT: ${describe(err)}`, err);
    }
    if (kind === "serialization") {
      this.pool.release(conn);
      return { done: false, kind, err };
    }
    if (kind === "login") {
      this.pool.failed(conn, err);
      throw new DfsError("UNAVAILABLE", `the metadata database ${this.url} refused the connection: ${describe(err)}`, { cause: err });
    }
    // A server that cannot begin a serializable transaction (a hot standby) cannot serve either.
    if (kind === "connection" || (phase === "begin" && err instanceof postgres.PostgresError)) {
      const why = phase === "begin" && this.primaryOnly && codeOf(err) === "CONNECTION_DESTROYED" ? notPrimary(conn, err) : err;
      this.pool.failed(conn, why);
      return { done: false, kind: "connection", err: why };
    }
    this.pool.release(conn);
    throw err;
  }

  /** The deadline passed or the caller gave up during an attempt: its connection is dropped, which rolls back anything not committed. */
  private abandon(conn: Conn, why: symbol, phase: Phase, retries: Retries): never {
    if (phase === "begin") {
      const err = new Error(`no answer from ${conn.host} while opening a transaction`);
      this.pool.failed(conn, err);
      throw this.stopped(why, retries, retries.last?.kind === "connection" ? retries.last.err : err);
    }
    this.pool.discard(conn);
    if (phase === "commit") {
      throw this.unknown(why === DEADLINE ? `COMMIT was not answered within ${retries.timeoutMs} ms` : "the transaction was cancelled while its COMMIT was under way");
    }
    throw this.stopped(why, retries, undefined);
  }

  /** Waits before the next attempt: a little longer after each failure, jittered so that rivals do not collide again. */
  private async pause(failure: Exclude<Attempt<never>, { done: true }>, retries: Retries, signal: AbortSignal): Promise<void> {
    retries.last = failure;
    let ms: number;
    if (failure.kind === "serialization") {
      this.counts.serializationRetries++;
      if (++retries.serialization > this.maxSerializationRetries) {
        throw new DfsError("BUSY", `the metadata transaction failed serialization ${retries.serialization} times in a row; the database is too contended`, {
          cause: failure.err,
          details: { sqlstate: sqlState(failure.err) },
        });
      }
      ms = Math.random() * Math.min(200, 2 ** retries.serialization);
    } else {
      this.counts.connectionRetries++;
      // Each server of the URL gets one quick try; after that the back end backs off.
      const round = Math.floor(retries.connection++ / this.hosts);
      ms = round === 0 ? 0 : (0.5 + Math.random() / 2) * Math.min(1000, 25 * 2 ** round);
    }
    await sleep(ms, undefined, { signal }).catch(() => {
      throw this.stopped(signal.reason, retries, failure.kind === "connection" ? failure.err : undefined);
    });
  }

  /**
   * The error of a transaction stopped by its deadline or its caller before COMMIT was sent (nothing
   * was committed): UNAVAILABLE when the last try could not reach a server that takes writes.
   */
  private stopped(why: unknown, retries: Retries, connectionError: unknown): DfsError {
    if (why instanceof DfsError) return why;
    if (why === CANCELLED) return new DfsError("CANCELLED", "the metadata transaction was cancelled; nothing was committed");
    const ms = retries.timeoutMs;
    if (connectionError) {
      return new DfsError("UNAVAILABLE", `no metadata database server of ${this.url} took the transaction within ${ms} ms: ${describe(connectionError)}`, {
        cause: connectionError,
      });
    }
    const after = retries.serialization > 0 ? ` (after ${retries.serialization} serialization failures)` : "";
    return new DfsError("TIMEOUT", `the metadata transaction did not finish within ${ms} ms${after}; nothing was committed`);
  }

  private unknown(why: string, cause?: unknown): DfsError {
    this.counts.unknownOutcomes++;
    this.log.error("pg-commit-outcome-unknown", { why });
    return outcomeUnknown(why, cause);
  }

  stats(): PostgresStats {
    return { ...this.counts, connections: this.pool.connections, server: this.pool.host };
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** The statements of one postgres.js transaction, with `?` placeholders and rows as arrays. */
function txOf(sql: postgres.TransactionSql): Tx {
  const query = (text: string, params: Param[]) =>
    sql.unsafe(numberPlaceholders(text), params as never[], { prepare: params.length > 0 }).values();
  return {
    all: async (text, params = []) => Array.from(await query(text, params)) as Row[],
    get: async (text, params = []) => (await query(text, params))[0] as Row | undefined,
    run: async (text, params = []) => (await query(text, params)).count ?? 0,
  };
}

/** `p`, or the abort reason of `signal` if it aborts first. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function codeOf(err: unknown): unknown {
  return (err as { code?: unknown } | null)?.code;
}

/** The client library closes a connection to a server in recovery itself, and says only that it did. */
function notPrimary(conn: Conn, err: unknown): Error {
  return new Error(`${conn.host} was passed over: it is a standby in recovery, or it closed the connection at once`, { cause: err });
}

function noticeText(n: Notice): string {
  return [n.message, n.detail].filter(Boolean).join(" ");
}
