import { DfsError } from "../protocol/errors.js";

/** One server of a metadata URL. */
export interface PgHost {
  host: string;
  port: number;
}

/** A PostgreSQL metadata URL, taken apart. */
export interface PgTarget {
  /** The URL without `target_session_attrs`: user, password, database and the other settings. */
  url: string;
  /** The servers, in the order they are tried. */
  hosts: PgHost[];
  /** Only a server that takes writes will do (`target_session_attrs=read-write` or `primary`). */
  primaryOnly: boolean;
}

const DEFAULT_PORT = 5432;

/**
 * Reads a libpq-style URL: `postgres://user:pass@host1:5432,host2:5432/db?target_session_attrs=read-write`.
 * The client library's own handling of several hosts cannot be used: it takes a standby as
 * read-write, and while no server qualifies it retries in a busy loop and never fails; so the back
 * end gives it one host at a time and does the choosing itself.
 */
export function parsePgUrl(url: string): PgTarget {
  const m = /^(postgres(?:ql)?:\/\/)([^@/?#]*@)?([^/?#]*)([^?#]*)(\?[^#]*)?$/.exec(url);
  if (!m) throw new DfsError("BAD_REQUEST", `not a PostgreSQL URL (postgres://[user[:password]@]host[:port][,host[:port]...]/database[?...]): ${redact(url)}`);
  const [, scheme, userinfo = "", hostList = "", pathPart = "", query = ""] = m;
  const hosts = hostList.split(",").map((h) => parseHost(h, url));
  const params = new URLSearchParams(query.slice(1));
  const attrs = params.get("target_session_attrs") ?? "any";
  params.delete("target_session_attrs");
  if (!["any", "read-write", "primary"].includes(attrs)) {
    throw new DfsError("BAD_REQUEST", `target_session_attrs=${attrs} cannot serve metadata, which must be written: use read-write (or leave it out for a single server)`);
  }
  const rest = params.size > 0 ? `?${params}` : "";
  const first = hosts[0]!;
  const hostPart = first.host.includes(":") ? `[${first.host}]:${first.port}` : `${first.host}:${first.port}`;
  return { url: `${scheme}${userinfo}${hostPart}${pathPart}${rest}`, hosts, primaryOnly: attrs !== "any" };
}

function parseHost(entry: string, url: string): PgHost {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*))(?::(\d+))?$/.exec(entry);
  if (!m) throw new DfsError("BAD_REQUEST", `bad host ${JSON.stringify(entry)} in PostgreSQL URL ${redact(url)}`);
  const host = decodeURIComponent(m[1] ?? m[2] ?? "") || "localhost";
  const port = m[3] ? Number(m[3]) : DEFAULT_PORT;
  if (!(port > 0 && port < 65536)) throw new DfsError("BAD_REQUEST", `bad port in PostgreSQL URL ${redact(url)}`);
  return { host, port };
}

/** The URL with its password hidden, for messages and logs. */
export function redact(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:@/]*):[^@/]*@/i, "$1:***@");
}

/** `host:port`, for messages. */
export function hostName(h: PgHost): string {
  return h.host.includes(":") ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`;
}
