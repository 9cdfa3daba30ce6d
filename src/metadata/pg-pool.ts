import postgres from "postgres";
import { DfsError } from "../protocol/errors.js";
import type { Logger } from "../log.js";
import { describe } from "./pg-errors.js";
import { hostName, type PgTarget } from "./pg-url.js";

/** A notice (warning) a server sent on a connection, as postgres.js parses it. */
export type Notice = postgres.Notice;

/**
 * One connection to one server. Each is a postgres.js client of its own, limited to one
 * connection: the library tells notices apart only by client, and a notice that arrives while a
 * COMMIT is outstanding must be pinned on that transaction (see `commitNotices`).
 */
export class Conn {
  readonly sql: postgres.Sql;
  /** Notices that arrived while this connection's COMMIT was outstanding; undefined at other times. */
  commitNotices: Notice[] | undefined;
  /** A value could not be read: the library's state for the rest of that answer is not to be trusted. */
  unreadable = false;

  /** The server, `host:port`. */
  readonly host: string;

  constructor(target: PgTarget, readonly hostIndex: number, connectTimeoutMs: number, log: Logger) {
    const h = target.hosts[hostIndex]!;
    this.host = hostName(h);
    this.sql = postgres(target.url, {
      // Arrays, so that the library does not split an IPv6 address at its colons.
      ...(h.host.startsWith("/") ? { path: `${h.host}/.s.PGSQL.${h.port}` } : { host: [h.host] as unknown as string, port: [h.port] as unknown as number }),
      max: 1,
      // libpq's read-write: the library's own read-write check takes a hot standby for a primary.
      target_session_attrs: target.primaryOnly ? "primary" : undefined,
      connect_timeout: connectTimeoutMs / 1000,
      fetch_types: false,
      // A connection that closed while idle is opened again by the library on its next use, at once.
      backoff: () => 0,
      types: valueTypes(() => (this.unreadable = true)),
      // How operators tell these sessions apart in pg_stat_activity; `application_name` in the URL wins.
      connection: { application_name: "dfs" },
      onnotice: (n) => {
        if (this.commitNotices) this.commitNotices.push(n);
        else log.warn("pg-notice", { host: this.host, severity: n.severity, code: n.code, message: n.message });
      },
    });
  }

  /** Drops the connection at once; a transaction still open on it is rolled back by the server. */
  destroy(): void {
    this.sql.end({ timeout: 0 }).catch(() => {});
  }
}

/**
 * How values of `Row` (src/metadata/tx.ts) are read from columns, and how parameters are written
 * to them once the server has said a parameter's type: so 1 and 0 are true and false, a number
 * of milliseconds is a time, and a string bound to json is the JSON text itself.
 */
const valueTypes = (unreadable: () => void) => ({
  bigint: { to: 20, from: [20], parse: (x: string) => parseBigint(x, unreadable), serialize: (x: unknown) => String(x) },
  boolean: { to: 16, from: [16], parse: (x: string) => (x === "t" ? 1 : 0), serialize: (x: unknown) => (typeof x === "string" ? x : x ? "t" : "f") },
  time: { to: 1184, from: [1082, 1114, 1184], parse: (x: string) => new Date(x).getTime(), serialize: (x: unknown) => new Date(x as number).toISOString() },
  json: { to: 114, from: [114, 3802], parse: (x: string) => x, serialize: (x: unknown) => (typeof x === "string" ? x : JSON.stringify(x)) },
});

function parseBigint(x: string, unreadable: () => void): number {
  const n = Number(x);
  if (Number.isSafeInteger(n)) return n;
  unreadable();
  throw new DfsError("INTERNAL", `the metadata database returned the integer ${x}, beyond what a JavaScript number holds exactly`);
}

/**
 * At most `size` connections, each running one transaction at a time. It remembers which server
 * last took a transaction and opens new connections there; when a server fails, the next one in
 * the URL's list is tried, round and round, as libpq goes through its hosts.
 */
export class ConnPool {
  private readonly all = new Set<Conn>();
  private readonly idle: Conn[] = [];
  private readonly waiters = new Set<{ give: (c: Conn) => void; fail: (err: unknown) => void }>();
  private preferred = 0;
  private closed = false;
  /** Servers whose last connection failed: each is logged once when it fails, and again when it serves. */
  private readonly failing = new Set<string>();
  /** Why the last connection failed, until a transaction gets through again. */
  lastConnectionError: unknown;

  constructor(
    private readonly target: PgTarget,
    private readonly size: number,
    private readonly connectTimeoutMs: number,
    private readonly log: Logger,
  ) {}

  /** The server new connections go to. */
  get host(): string {
    return hostName(this.target.hosts[this.preferred]!);
  }

  get connections(): number {
    return this.all.size;
  }

  /** A connection for one transaction; waits for one to be free, until `signal` aborts. */
  async acquire(signal: AbortSignal): Promise<Conn> {
    if (this.closed) throw closedError();
    signal.throwIfAborted();
    const ready = this.idle.pop();
    if (ready) return ready;
    if (this.all.size < this.size) return this.connect();
    return new Promise<Conn>((resolve, reject) => {
      const waiter = {
        give: (c: Conn) => {
          signal.removeEventListener("abort", onAbort);
          resolve(c);
        },
        fail: (err: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(err);
        },
      };
      const onAbort = () => {
        this.waiters.delete(waiter);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }

  /** Gives back a connection that is fit for the next transaction. */
  release(c: Conn): void {
    if (this.closed || c.unreadable) return this.discard(c);
    const waiter = this.nextWaiter();
    if (waiter) waiter.give(c);
    else this.idle.push(c);
  }

  /** A transaction got through on `c`: its server is where new connections go. */
  succeeded(c: Conn): void {
    this.lastConnectionError = undefined;
    const moved = this.preferred !== c.hostIndex;
    this.preferred = c.hostIndex;
    if (moved || this.failing.size > 0) this.log.info("pg-server", { host: c.host });
    this.failing.clear();
  }

  /** `c` lost its server or never reached it: it is dropped, and new connections try the next server. */
  failed(c: Conn, err: unknown): void {
    this.lastConnectionError = err;
    const n = this.target.hosts.length;
    if (!this.failing.has(c.host)) this.log.warn("pg-connection-failed", { host: c.host, err: describe(err) });
    this.failing.add(c.host);
    if (n > 1 && this.preferred === c.hostIndex) this.preferred = (c.hostIndex + 1) % n;
    this.discard(c);
  }

  /** Drops `c` (whatever its transaction left is rolled back by the server) and lets a waiter open a fresh connection. */
  discard(c: Conn): void {
    c.destroy();
    this.all.delete(c);
    const waiter = this.closed ? undefined : this.nextWaiter();
    if (waiter) waiter.give(this.connect());
  }

  /** Ends every connection, letting statements under way finish for a second; later calls fail UNAVAILABLE. */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiters) w.fail(closedError());
    this.waiters.clear();
    this.idle.length = 0;
    await Promise.all([...this.all].map((c) => c.sql.end({ timeout: 1 }).catch(() => {})));
  }

  private connect(): Conn {
    const c = new Conn(this.target, this.preferred, this.connectTimeoutMs, this.log);
    this.all.add(c);
    return c;
  }

  private nextWaiter() {
    const next = this.waiters.values().next();
    if (next.done) return undefined;
    this.waiters.delete(next.value);
    return next.value;
  }
}

function closedError(): DfsError {
  return new DfsError("UNAVAILABLE", "the metadata back end is closed");
}
