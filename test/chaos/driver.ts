/**
 * One chaos client: a process of its own that drives the client library (the code the CLI runs) and speaks
 * JSON lines: a request `{id, op, ...}` on stdin, a reply `{id, ok, result | code, message}` on stdout, and
 * `{event: "lost", path, token}` when a lock taken with `lock` is reported lost.
 *
 * This is the only file of the chaos suite that knows the client library's API: when it changes, adapt here.
 */
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { loadCerts } from "../../src/certs/index.js";
import { logger } from "../../src/log.js";
import { toDfsError } from "../../src/protocol/errors.js";
import { DfsClient } from "../../src/roles/client.js";
import { contentBytes, sha256, type Content } from "./content.js";

/** Calls the driver understands; `path` is always a normalised absolute path. */
export type DriverCall =
  | { op: "connect" }
  | { op: "write"; path: string; content: Content }
  | { op: "read"; path: string }
  | { op: "rm"; path: string }
  | { op: "mv"; from: string; to: string }
  | { op: "lock"; path: string; waitMs: number }
  | { op: "unlock"; path: string }
  | { op: "begin" }
  | { op: "commit" }
  | { op: "abort" }
  | { op: "ls"; prefix: string }
  | { op: "status" };

export type DriverRequest = { id: number } & DriverCall;

/** A lock this client took with `lock`, as of the end of a call on its path. */
export interface LeaseState {
  token: number;
  lost: boolean;
}

export type DriverReply =
  | { id: number; ok: true; result: Record<string, unknown>; lease?: LeaseState }
  | { id: number; ok: false; code: string; message: string; lease?: LeaseState };

export type DriverEvent = { event: "lost"; path: string; token: number };

interface Lease {
  readonly path: string;
  readonly token: number;
  readonly lost: unknown;
}

const { values: opts } = parseArgs({
  options: { directory: { type: "string" }, certs: { type: "string" }, cache: { type: "string" }, name: { type: "string" } },
});
const client = new DfsClient({
  directoryUrls: opts.directory!.split(","),
  tls: loadCerts(opts.certs!, "client"),
  cacheDir: opts.cache!,
  log: logger(opts.name ?? "chaos-client"),
});
/** Locks taken with `lock` and not yet released. */
const held = new Map<string, Lease>();
const reported = new Set<Lease>();

const send = (msg: DriverReply | DriverEvent) => process.stdout.write(JSON.stringify(msg) + "\n");

// The library marks a lease lost when a renewal is refused; it tells nobody, so look.
setInterval(() => {
  for (const lease of held.values()) {
    if (lease.lost && !reported.has(lease)) {
      reported.add(lease);
      send({ event: "lost", path: lease.path, token: lease.token });
    }
  }
}, 100).unref();

/** After a write under our lock: the library re-takes a lost lock by itself, so ask which lease it used. */
async function currentLease(path: string): Promise<void> {
  const mine = held.get(path);
  if (!mine?.lost || !client.holds(path)) return;
  try {
    held.set(path, await client.lock(path, { waitMs: 0 }));
  } catch {
    // Lost again meanwhile: the reply says so through `lease.lost`.
  }
}

async function perform(req: DriverRequest): Promise<Record<string, unknown>> {
  switch (req.op) {
    case "connect":
      await client.connect();
      return {};
    case "write": {
      const r = await client.write(req.path, [contentBytes(req.content)]);
      await currentLease(req.path);
      return { version: r.version, staged: r.staged };
    }
    case "read": {
      const parts: Buffer[] = [];
      const info = await client.read(req.path, async (d) => void parts.push(Buffer.from(d)));
      const data = Buffer.concat(parts);
      return { sha256: sha256(data), size: data.length, version: info.version };
    }
    case "rm":
      await client.rm(req.path);
      return {};
    case "mv":
      await client.mv(req.from, req.to);
      return {};
    case "lock": {
      const lease = await client.lock(req.path, { waitMs: req.waitMs });
      held.set(req.path, lease);
      return { token: lease.token };
    }
    case "unlock":
      held.delete(req.path);
      return { released: await client.unlock(req.path) };
    case "begin":
      client.begin();
      return {};
    case "commit":
      return { versions: (await client.commit()).versions };
    case "abort":
      return { dropped: await client.abort() };
    case "ls":
      return { paths: (await client.ls(req.prefix)).map((e) => e.path) };
    case "status":
      return { status: await client.status() };
  }
}

function leaseOf(req: DriverRequest): LeaseState | undefined {
  const path = "path" in req ? req.path : "from" in req ? req.from : undefined;
  const lease = path === undefined ? undefined : held.get(path);
  return lease && { token: lease.token, lost: Boolean(lease.lost) };
}

async function serve(line: string): Promise<void> {
  let req: DriverRequest;
  try {
    req = JSON.parse(line) as DriverRequest;
  } catch {
    process.stderr.write(`bad request line: ${line.slice(0, 200)}\n`);
    return;
  }
  // Before the call, so that a mutation reports the lease it was made under.
  const before = leaseOf(req);
  try {
    const result = await perform(req);
    send({ id: req.id, ok: true, result, lease: leaseOf(req) ?? before });
  } catch (err) {
    const e = toDfsError(err);
    send({ id: req.id, ok: false, code: e.code, message: e.message, lease: leaseOf(req) ?? before });
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => void serve(line));
lines.on("close", () => {
  void client.close().finally(() => process.exit(0));
});
