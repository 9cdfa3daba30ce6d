import { randomInt } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { processCheckpointer } from "./checkpointer.js";
import { DfsError } from "./protocol/errors.js";
import { Router, type Peer } from "./transport/actor.js";
import { Link } from "./transport/link.js";
import { Pool } from "./transport/pool.js";
import { listen, type Server } from "./transport/server.js";
import type { TlsMaterial } from "./transport/tls.js";
import { logger, type Logger } from "./log.js";
import { createDirectory } from "./roles/directory.js";
import { createLock } from "./roles/lock.js";
import { createStorage } from "./roles/storage.js";
import type { HttpOptions, ObservedNode } from "./observe/serve.js";
import type { Metrics } from "./observe/metrics.js";

export const SERVER_ROLES = ["directory", "lock", "storage"] as const;
export type ServerRole = (typeof SERVER_ROLES)[number];
export const DEFAULT_PORTS: Record<ServerRole, number> = { directory: 9000, lock: 9001, storage: 9003 };

export interface NodeOptions {
  roles: ServerRole[];
  host: string;
  port?: number;
  dataDir: string;
  tls: TlsMaterial;
  /** Addresses of the directory (see {@link parseDirectoryUrls}); a node holds a link to one at a time. */
  directoryUrls: readonly string[];
  replicas: number;
  minReplicas: number;
  deadAfterMs: number;
  chunkSize: number;
  capacity?: number;
  zone: string;
  scrubIntervalMs?: number;
  orphanGraceMs?: number;
  /** Directory: extra metadata folders, each a full copy. */
  metaDirs?: string[];
  /** Directory: journal records between metadata snapshots. */
  snapshotEvery?: number;
  /** Directory: "sqlite" (default, the embedded store) or a PostgreSQL URL, checked before. */
  metadata?: string;
  /** Tag for log lines, to tell nodes of one process apart. */
  label?: string;
  /** Serve /metrics (and on a directory the status page and API) at this address. */
  http?: HttpOptions;
  /** Metrics shared by the nodes of one process (`dfs local`): this node's figures go there too. */
  metrics?: Metrics;
}

export interface RunningNode {
  readonly url: string;
  readonly server: Server;
  /** Node id of the storage role, when this node has one. */
  readonly storageId?: string;
  /** Where /metrics and the status page are served, with --http. */
  readonly httpUrl?: string;
  close(): Promise<void>;
}

/** Parses `--role a,b`; unknown names get a sentence listing the valid ones. */
export function parseRoles(text: string): string[] {
  const roles = text.split(",").map((r) => r.trim()).filter(Boolean);
  if (roles.length === 0) throw new DfsError("BAD_REQUEST", "--role needs a role: directory, lock, storage or client");
  for (const r of roles) {
    if (!["directory", "lock", "storage", "client", "s3"].includes(r)) {
      throw new DfsError("BAD_REQUEST", `unknown role ${JSON.stringify(r)}; roles are directory, lock, storage, client, s3`);
    }
  }
  if (roles.includes("client") && roles.length > 1) throw new DfsError("BAD_REQUEST", "the client role runs alone; start servers and the client separately");
  if (roles.includes("s3") && roles.length > 1) throw new DfsError("BAD_REQUEST", "the s3 gateway runs alone: it is a client of the cluster; start it as its own process");
  return [...new Set(roles)];
}

/**
 * Parses `--directory`: a comma list of distinct wss:// addresses of the directory. A mistake in it would
 * otherwise show only as a link that never comes up, so each gets a sentence at start-up.
 */
export function parseDirectoryUrls(text: string): string[] {
  if (text.trim() === "") throw new DfsError("BAD_REQUEST", "--directory: no address given; give one like wss://host:9000, or several separated by commas");
  const entries = text.split(",").map((u) => u.trim());
  const seen = new Map<string, string>();
  for (const entry of entries) {
    if (entry === "") throw new DfsError("BAD_REQUEST", `--directory: ${JSON.stringify(text)} has an empty entry; give addresses like wss://host:9000, separated by commas`);
    let url: URL;
    try {
      url = new URL(entry);
    } catch {
      throw new DfsError("BAD_REQUEST", `--directory: ${JSON.stringify(entry)} is not an address like wss://host:9000`);
    }
    if (url.protocol !== "wss:") throw new DfsError("BAD_REQUEST", `--directory: ${entry} must start with wss:// (every dfs connection is TLS)`);
    // Compared as URLs, so that wss://a:9000 and wss://A:9000/ are one address.
    const earlier = seen.get(url.href);
    if (earlier !== undefined) throw new DfsError("BAD_REQUEST", `--directory: ${entry} is listed twice${earlier === entry ? "" : ` (as ${earlier} too)`}`);
    seen.set(url.href, entry);
  }
  return entries;
}

/** The directory's metadata folders: DATA/meta, then the extra ones. */
export function metaDirsOf(dataDir: string, extra: string[] = []): string[] {
  return [path.join(dataDir, "meta"), ...extra];
}

/** The address others use for a server bound to `host` (a wildcard address advertises the machine's name). */
function advertised(host: string, port: number): string {
  const name = host === "0.0.0.0" || host === "::" ? os.hostname() : host;
  return `wss://${name.includes(":") ? `[${name}]` : name}:${port}`;
}

/** Starts the server roles of one node on one port: each role's actor behind one router. */
export async function startNode(opts: NodeOptions): Promise<RunningNode> {
  const log: Logger = logger("node", opts.label ?? "");
  const router = new Router();
  const port = opts.port ?? DEFAULT_PORTS[opts.roles[0]!];
  const server = await listen({ host: opts.host, port, tls: opts.tls, router, log: log.child("transport") });
  const url = advertised(opts.host, server.port);
  const closers: (() => Promise<void>)[] = [];
  const directoryUrls = opts.roles.includes("directory") ? [url] : opts.directoryUrls;
  let storageId: string | undefined;
  let httpUrl: string | undefined;
  const observed: ObservedNode = { url, router, log };
  try {
    if (opts.roles.includes("directory")) {
      const dirLog = logger("directory", opts.label ?? "");
      const metaDirs = metaDirsOf(opts.dataDir, opts.metaDirs);
      // On PostgreSQL a storage node may be linked to another directory process: orders go over a connection of our own.
      const peers = new Pool({ tls: opts.tls, log: dirLog.child("pool"), router, expectRoles: ["storage"], what: "storage node" });
      closers.push(() => peers.close());
      const d = await createDirectory({ log: dirLog, checkpointer: processCheckpointer(dirLog.child("meta")), peers }, {
        dataDir: opts.dataDir, url, replicas: opts.replicas, minReplicas: opts.minReplicas,
        deadAfterMs: opts.deadAfterMs, chunkSize: opts.chunkSize, orphanGraceMs: opts.orphanGraceMs,
        metaDirs, snapshotEvery: opts.snapshotEvery, metadata: opts.metadata,
        recoverHint: ["dfs directory recover --data", opts.dataDir, ...(opts.metaDirs ?? []).flatMap((d) => ["--meta-dir", d])].join(" "),
      });
      router.add(d.actor);
      closers.push(() => d.close());
      observed.directory = d.view;
    }
    // Nodes spread over the directory processes, as clients do.
    const linkInit = { urls: directoryUrls, startAt: randomInt(directoryUrls.length), tls: opts.tls, router, expectRoles: ["directory"], what: "directory" } as const;
    if (opts.roles.includes("lock")) {
      const lockLog = logger("lock", opts.label ?? "");
      let register: ((p: Peer) => Promise<void>) | undefined;
      const link = new Link({ ...linkInit, log: lockLog.child("link"), onConnect: (p) => register!(p) });
      const l = await createLock({ log: lockLog, directory: link }, { dataDir: opts.dataDir, url });
      register = (p) => l.register(p);
      router.add(l.actor);
      observed.lock = l;
      link.start();
      closers.push(() => link.close(), () => l.close());
      warnWhileDown(link, lockLog);
    }
    if (opts.roles.includes("storage")) {
      const storeLog = logger("storage", opts.label ?? "");
      const pool = new Pool({ tls: opts.tls, log: storeLog.child("pool"), router, expectRoles: ["storage", "directory"], what: "storage node" });
      let register: ((p: Peer) => Promise<void>) | undefined;
      const link = new Link({ ...linkInit, log: storeLog.child("link"), onConnect: (p) => register!(p) });
      const s = await createStorage({ log: storeLog, directory: link, peers: pool }, {
        dataDir: opts.dataDir, url, zone: opts.zone, capacity: opts.capacity, scrubIntervalMs: opts.scrubIntervalMs,
      });
      storageId = s.nodeId;
      register = (p) => s.register(p);
      router.add(s.actor);
      observed.storage = s;
      link.start();
      closers.push(() => link.close(), () => pool.close(), () => s.close());
      warnWhileDown(link, storeLog);
    }
    router.ready();
    // Loaded only with --http or shared metrics: prom-client is no part of a node that serves none.
    if (opts.http) {
      const { serveNode } = await import("./observe/serve.js");
      const h = await serveNode(observed, opts.http, opts.tls, opts.metrics);
      httpUrl = h.url;
      // Closers run last first: nobody reads a node whose roles are closing.
      closers.push(() => h.close());
    } else if (opts.metrics) {
      const { observeNode } = await import("./observe/serve.js");
      const o = observeNode(opts.metrics, observed);
      closers.push(async () => o.close());
    }
  } catch (err) {
    await server.close();
    for (const c of closers.reverse()) await c().catch(() => {});
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    url,
    server,
    storageId,
    httpUrl,
    close() {
      closing ??= (async () => {
        await server.close();
        for (const c of closers.reverse()) await c().catch((err) => log.error("close failed", { err }));
      })();
      return closing;
    },
  };
}

/** Says once, clearly, when the directory cannot be reached, instead of a line per retry. */
function warnWhileDown(link: Link, log: Logger): void {
  setTimeout(() => {
    if (!link.up && link.lastError) log.warn("directory unreachable, retrying", { url: link.url, cause: link.lastError.message });
  }, 3000).unref();
}

