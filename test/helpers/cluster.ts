import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import type { TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { initCerts } from "../../src/certs/index.js";
import type { StatusReply } from "../../src/protocol/directory.js";
import type { Backend } from "./backends.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** How to run dfs: from source through tsx, or a built executable named by DFS_BIN. */
export function dfsCommand(): { cmd: string; pre: string[] } {
  if (process.env.DFS_BIN) return { cmd: process.env.DFS_BIN, pre: [] };
  // Resolved here, so that a child started in another folder still finds the loader.
  return { cmd: process.execPath, pre: ["--import", import.meta.resolve("tsx"), path.join(ROOT, "src/node.ts")] };
}

/**
 * Who owns what a helper starts, and stops it when done: a test's context, or a suite's owner of
 * what outlives one test (the PostgreSQL server of a `forEachBackend` suite).
 */
export interface Scope {
  after(fn: () => unknown): void;
  diagnostic(message: string): void;
}

/** Processes each test started, so that its folders are removed only once they have all exited. */
const procsOf = new WeakMap<Scope, Set<Proc>>();
/** Every process started from this test file: killed when it exits, whatever a failing hook skipped. */
const everyProc = new Set<Proc>();
process.on("exit", () => {
  for (const p of everyProc) if (p.alive) p.child.kill("SIGKILL");
});

export function tmpDir(t: Scope, prefix = "dfs-test-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(async () => {
    // A node still running could write into the folder while it is being removed.
    await Promise.all([...(procsOf.get(t) ?? [])].map((p) => p.kill()));
    try {
      fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    } catch (err) {
      // A leftover temp folder must not fail the test, nor stop the hooks that kill its processes.
      t.diagnostic(`could not remove ${dir}: ${(err as Error).message}`);
    }
  });
  return dir;
}

/**
 * A loopback address where nothing listens (a port the system just handed out and took back), for a server
 * that is to start there later, or never.
 */
export async function freeAddress(): Promise<string> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return `wss://127.0.0.1:${port}`;
}

/** Polls `fn` until it returns a truthy value; fails with `what` after the deadline, or once `signal` aborts. */
export async function waitFor<T>(fn: () => T | Promise<T>, what: string, timeoutMs = 20_000, everyMs = 100, signal?: AbortSignal): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    if (signal?.aborted) throw new Error(`stopped waiting for ${what}`);
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A dfs child process; its output is kept for assertions and failure reports. */
export class Proc {
  stdout = "";
  stderr = "";
  readonly exited: Promise<number | null>;
  url = "";

  constructor(readonly child: ChildProcess, readonly args: string[]) {
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (this.stdout += d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async listening(timeoutMs = 60_000): Promise<string> {
    // Polling stops once the race is decided: a node that failed to start must not keep the test file alive.
    const decided = new AbortController();
    const m = await Promise.race([
      waitFor(() => /listening on (wss:\/\/\S+)/.exec(this.stdout), "listening line", timeoutMs, 20, decided.signal),
      this.exited.then((code) => {
        throw new Error(`dfs ${this.args.join(" ")} exited with ${code} before listening:\n${this.stderr}`);
      }),
    ]).finally(() => decided.abort());
    this.url = m[1]!;
    return this.url;
  }

  /** The base address of the node's --http server, from its "http on" line. */
  async http(timeoutMs = 60_000): Promise<string> {
    const decided = new AbortController();
    const m = await Promise.race([
      waitFor(() => /http on (https?:\/\/\S+)/.exec(this.stdout), "http line", timeoutMs, 20, decided.signal),
      this.exited.then((code) => {
        throw new Error(`dfs ${this.args.join(" ")} exited with ${code} before serving http:\n${this.stderr}`);
      }),
    ]).finally(() => decided.abort());
    return m[1]!;
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (this.alive) this.child.kill(signal);
    await this.exited;
  }
}

/** How a dfs child is started; every field is optional and the defaults are those of {@link dfsCommand}. */
export interface DfsExec {
  cwd?: string;
  /** Extra environment, on top of this process's (or alone, with `inheritEnv: false`). */
  env?: NodeJS.ProcessEnv;
  /** Run this executable (a built `dfs`) instead of {@link dfsCommand}'s choice. */
  bin?: string;
  /** false: the child sees only DFS_LOG_LEVEL and `env`, not this process's environment. Default true. */
  inheritEnv?: boolean;
}

export function spawnDfs(t: TestContext, args: string[], opts: DfsExec = {}): Proc {
  const { cmd, pre } = opts.bin ? { cmd: opts.bin, pre: [] } : dfsCommand();
  return spawnTracked(t, cmd, [...pre, ...args], args, opts);
}

/** Runs a TypeScript file of this repository (e.g. a test's helper program) as a child, cleaned up like a dfs node. */
export function spawnScript(t: TestContext, script: string, args: string[], opts: Omit<DfsExec, "bin"> = {}): Proc {
  return spawnTracked(t, process.execPath, ["--import", import.meta.resolve("tsx"), path.resolve(ROOT, script), ...args], [script, ...args], opts);
}

function spawnTracked(t: TestContext, cmd: string, argv: string[], args: string[], opts: DfsExec): Proc {
  const env = { ...(opts.inheritEnv === false ? {} : process.env), DFS_LOG_LEVEL: process.env.DFS_LOG_LEVEL ?? "info", ...opts.env };
  return spawnChild(t, cmd, argv, { cwd: opts.cwd ?? ROOT, env, args });
}

/** How {@link spawnChild} starts a program. */
export interface ChildExec {
  cwd?: string;
  /** The whole environment of the child (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Run as this user and group (a server that refuses to run as root). */
  uid?: number;
  gid?: number;
  /** How the process is named in failure reports (default: `argv`). */
  args?: string[];
}

/** Starts any program as a child of the test, killed and waited for like a dfs node before the test's folders go. */
export function spawnChild(t: Scope, cmd: string, argv: string[], opts: ChildExec = {}): Proc {
  const child = spawn(cmd, argv, {
    cwd: opts.cwd ?? ROOT,
    env: opts.env ?? process.env,
    stdio: ["pipe", "pipe", "pipe"],
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
  });
  const p = new Proc(child, opts.args ?? [cmd, ...argv]);
  if (!procsOf.has(t)) procsOf.set(t, new Set());
  procsOf.get(t)!.add(p);
  everyProc.add(p);
  t.after(() => p.kill());
  return p;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs dfs to completion, feeding `stdin` if given. */
export async function runDfs(t: TestContext, args: string[], opts: DfsExec & { stdin?: string | Buffer; timeoutMs?: number } = {}): Promise<RunResult> {
  const p = spawnDfs(t, args, opts);
  p.child.stdin?.end(opts.stdin ?? "");
  const timer = setTimeout(() => p.child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, stdout: p.stdout, stderr: p.stderr };
}

export interface ClusterOptions {
  storage?: number;
  deadAfter?: number;
  replicas?: number;
  directoryArgs?: string[];
  lockArgs?: string[];
  storageArgs?: (i: number) => string[];
  /**
   * The --directory list every node and client gets, made from the first directory's address (default: that
   * address alone), e.g. `(a) => [a, spare]` for a directory that is to move to `spare`.
   */
  directories?: (first: string) => string[];
  /** How every node and client of the cluster is started (default: {@link dfsCommand}, in ROOT). */
  exec?: DfsExec;
  /**
   * The directory's metadata back end (default: none given, so the directory's own default). "postgres": a
   * database of its own on the PostgreSQL server of the enclosing `forEachBackend` suite, kept across
   * directory restarts.
   */
  metadata?: Backend;
}

/** A real multi-process cluster on loopback: certificates, a directory, a lock service and storage nodes. */
export class Cluster {
  directory!: Proc;
  lock!: Proc;
  storage: Proc[] = [];
  readonly certs: string;
  readonly root: string;

  constructor(private readonly t: TestContext, private readonly opts: ClusterOptions) {
    this.root = tmpDir(t, "dfs-cluster-");
    this.certs = path.join(this.root, "certs");
  }

  /** The address of the last directory that listened (one that failed to start again has none of its own). */
  get dirUrl(): string {
    return this.directory.url || this.lastDirUrl;
  }

  private lastDirUrl = "";
  private dirList?: string[];
  private database?: Promise<string>;

  /** What nodes and clients get as --directory: the list of {@link ClusterOptions.directories}, or {@link dirUrl}. */
  get directoryArg(): string {
    return this.dirList?.join(",") ?? this.dirUrl;
  }

  /** What the directory gets as --metadata: "sqlite", or the URL of this cluster's database, made on first use. */
  async metadata(): Promise<string | undefined> {
    if (this.opts.metadata !== "postgres") return this.opts.metadata;
    // Loaded on demand: the PostgreSQL helpers build on this file.
    this.database ??= import("./backends.js").then((b) => b.freshDatabase());
    return this.database;
  }

  async startDirectory(port = 0): Promise<void> {
    const metadata = await this.metadata();
    this.directory = spawnDfs(this.t, [
      "--role", "directory", "--port", String(port), "--data", path.join(this.root, "directory"), "--certs", this.certs,
      "--dead-after", String(this.opts.deadAfter ?? 3), "--replicas", String(this.opts.replicas ?? 2),
      ...(metadata ? ["--metadata", metadata] : []), ...(this.opts.directoryArgs ?? []),
    ], this.opts.exec);
    this.lastDirUrl = await this.directory.listening();
  }

  /**
   * Starts the lock service, or with another `name` (its data folder) one more lock process; `directory` is
   * where it reaches the directory (default: where every node does).
   */
  async startLock(opts: { name?: string; directory?: string } = {}): Promise<Proc> {
    const name = opts.name ?? "lock";
    const p = spawnDfs(this.t, ["--role", "lock", "--port", "0", "--data", path.join(this.root, name), "--certs", this.certs, "--directory", opts.directory ?? this.directoryArg, ...(this.opts.lockArgs ?? [])], this.opts.exec);
    if (name === "lock") this.lock = p;
    await p.listening();
    return p;
  }

  async startStorage(i: number): Promise<Proc> {
    const p = spawnDfs(this.t, [
      "--role", "storage", "--port", "0", "--data", path.join(this.root, `storage-${i}`), "--certs", this.certs,
      "--directory", this.directoryArg, ...(this.opts.storageArgs?.(i) ?? []),
    ], this.opts.exec);
    this.storage[i] = p;
    await p.listening();
    return p;
  }

  async start(): Promise<this> {
    await initCerts({ dir: this.certs });
    await this.startDirectory();
    this.dirList = this.opts.directories?.(this.dirUrl);
    await Promise.all([this.startLock(), ...Array.from({ length: this.opts.storage ?? 3 }, (_, i) => this.startStorage(i))]);
    await this.waitUp(this.opts.storage ?? 3);
    return this;
  }

  /** Waits until `storage` storage nodes and the lock service are up. */
  async waitUp(storage: number): Promise<StatusReply> {
    return waitFor(async () => {
      const s = await this.status();
      const up = (role: string) => s.nodes.filter((n) => n.role === role && n.state === "up").length;
      return up("storage") >= storage && up("lock") >= 1 ? s : undefined;
    }, `${storage} storage nodes up`);
  }

  /** Runs a one-shot client command. */
  client(args: string[], opts: { stdin?: string | Buffer; cwd?: string; cache?: string } = {}): Promise<RunResult> {
    return runDfs(this.t, ["--role", "client", "--directory", this.directoryArg, "--certs", this.certs, "--cache", opts.cache ?? path.join(this.root, "cache"), ...args], {
      ...this.opts.exec,
      ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}),
      ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
    });
  }

  /** Starts an interactive client session (the REPL) whose cache lives in `cache`. */
  session(cache: string, opts: { cwd?: string } = {}): Proc {
    return spawnDfs(this.t, ["--role", "client", "--directory", this.directoryArg, "--certs", this.certs, "--cache", cache], { ...this.opts.exec, ...opts });
  }

  async status(): Promise<StatusReply> {
    const r = await this.client(["status", "--json"]);
    if (r.code !== 0) throw new Error(`status failed: ${r.stderr}`);
    return JSON.parse(r.stdout) as StatusReply;
  }
}

export async function startCluster(t: TestContext, opts: ClusterOptions = {}): Promise<Cluster> {
  return new Cluster(t, opts).start();
}
