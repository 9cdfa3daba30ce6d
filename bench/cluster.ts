/**
 * Child processes of the benchmark (dfs nodes and bench workers) and the multi-process cluster on
 * loopback. Every child is tracked so that an exit or Ctrl-C of the bench kills them all.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { initCerts, loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import type { StatusReply } from "../src/protocol/directory.js";
import type { Channel } from "../src/transport/channel.js";
import { connect } from "../src/transport/connect.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
/** The tsx loader, resolved here so that children started in any folder find it. */
const TSX = import.meta.resolve("tsx");
export const WORKER = path.join(ROOT, "bench/worker.ts");

/** Extra node flags for every child (e.g. --cpu-prof), set by run.ts. */
export const childNodeFlags: string[] = [];

const live = new Set<Child>();

/** Kills every child still running, at once (safe inside an 'exit' handler). */
export function killAll(): void {
  for (const c of live) if (c.alive) c.proc.kill("SIGKILL");
}

export interface VmFigures {
  /** Peak resident set (VmHWM), bytes. */
  hwm: number;
  /** Current resident set (VmRSS), bytes. */
  rss: number;
}

/** VmHWM / VmRSS of a process, from /proc/PID/status (Linux). */
export function readVm(pid: number | "self"): VmFigures {
  const text = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? NaN) * 1024;
  return { hwm: kb("VmHWM"), rss: kb("VmRSS") };
}

/** CPU time (user + system) a process has used so far, in ms, from /proc/PID/stat (Linux); 0 once it is gone. */
export function cpuMs(pid: number): number {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    // utime and stime are fields 14 and 15 of the line, counted in clock ticks of 10 ms.
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

/** CPU time so far (ms) of each named group of processes, summed over the group. */
export function cpuByGroup(groups: Record<string, Child[]>): Record<string, number> {
  return Object.fromEntries(Object.entries(groups).map(([k, cs]) => [k, cs.reduce((n, c) => n + cpuMs(c.pid), 0)]));
}

/** CPU time each group spent since `before` (from {@link cpuByGroup}), per one of `units` (operations, MiB). */
export function cpuSince(groups: Record<string, Child[]>, before: Record<string, number>, units: number): Record<string, number> {
  const now = cpuByGroup(groups);
  return Object.fromEntries(Object.keys(groups).map((k) => [k, (now[k]! - before[k]!) / units]));
}

/** A child node process: stdout read line by line (in order), stderr appended to a log file. */
export class Child {
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;
  readonly started = performance.now();
  private readonly lines: string[] = [];
  private cursor = 0;
  private partial = "";
  private wake: (() => void)[] = [];
  private closed = false;

  /** Runs `node --import tsx ARGS`, or `bin ARGS` when a built executable is given. */
  constructor(readonly name: string, args: string[], readonly logFile: string, env: NodeJS.ProcessEnv = {}, bin?: string) {
    const err = fs.openSync(logFile, "a");
    this.proc = spawn(bin ?? process.execPath, bin ? args : [...childNodeFlags, "--import", TSX, ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ["pipe", "pipe", err],
    });
    fs.closeSync(err);
    live.add(this);
    this.proc.stdout!.setEncoding("utf8").on("data", (d: string) => {
      const parts = (this.partial + d).split("\n");
      this.partial = parts.pop()!;
      this.lines.push(...parts);
      for (const w of this.wake.splice(0)) w();
    });
    this.proc.stdin!.on("error", () => {});
    // "close", not "exit": by then stdout is drained, so a last message printed before exiting is not lost.
    this.exited = new Promise((resolve) =>
      this.proc.on("close", (code) => {
        this.closed = true;
        live.delete(this);
        for (const w of this.wake.splice(0)) w();
        resolve(code);
      }),
    );
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** The last lines of its log, for error messages. */
  tail(n = 15): string {
    try {
      return fs.readFileSync(this.logFile, "utf8").trimEnd().split("\n").slice(-n).join("\n");
    } catch {
      return "";
    }
  }

  /** Waits for the next stdout line matching re (earlier lines are consumed). */
  async next(re: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.cursor < this.lines.length) {
        const m = re.exec(this.lines[this.cursor++]!);
        if (m) return m;
      }
      if (this.closed) throw new Error(`${this.name} exited (${this.proc.exitCode ?? this.proc.signalCode}) before printing ${re}:\n${this.tail()}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.name} printed no ${re} within ${timeoutMs} ms:\n${this.tail()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake.push(() => (clearTimeout(t), resolve()));
      });
    }
  }

  /** Waits for the next `@@ {json}` message of a bench worker. */
  async message<T>(timeoutMs = 600_000): Promise<T> {
    const m = await this.next(/^@@ (.*)$/, timeoutMs);
    const msg = JSON.parse(m[1]!) as T & { error?: string };
    if (msg.error) throw new Error(`${this.name}: ${msg.error}\n${this.tail()}`);
    return msg;
  }

  send(line: string): void {
    this.proc.stdin!.write(line + "\n");
  }

  /** SIGTERM (a dfs node then closes cleanly), SIGKILL after graceMs. */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.alive) return;
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.proc.kill("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(t);
  }

  async kill(): Promise<void> {
    if (this.alive) this.proc.kill("SIGKILL");
    await this.exited;
  }
}

/** Starts a bench worker (bench/worker.ts MODE CONFIG). */
export function startWorker(name: string, mode: string, config: unknown, logDir: string): Child {
  return new Child(name, [WORKER, mode, JSON.stringify(config)], path.join(logDir, `${name}.log`), { DFS_LOG_LEVEL: "warn" });
}

/**
 * Starts one dfs node process and waits for its `listening on` line: the built executable (`dfsBinary`), to
 * measure the shipped program, or `node --import tsx src/node.ts ARGS` when there is none.
 */
export async function startDfs(name: string, args: string[], logDir: string): Promise<{ child: Child; url: string; ms: number }> {
  const bin = dfsBinary();
  const child = new Child(name, bin ? args : [path.join(ROOT, "src/node.ts"), ...args], path.join(logDir, `${name}.log`), {}, bin);
  const m = await child.next(/listening on ((?:wss|https?):\/\/\S+)/, 120_000);
  return { child, url: m[1]!, ms: performance.now() - child.started };
}

/** A client-certificate connection to a directory, for bench-side requests (status, metadata load). */
export function directoryChannel(url: string, certs: string): Promise<Channel> {
  return connect(url, { tls: loadCerts(certs, "client"), log: logger("bench"), expectRoles: ["directory"], what: "directory" });
}

export interface BenchClusterOptions {
  storage: number;
  replicas: number;
  /** The directories' --metadata (default: none given, so sql.js in each directory's data folder). */
  metadata?: string;
  /** Directory processes, all given to every node and client (more than one needs a shared --metadata). */
  directories?: number;
  /** Names this cluster's data folder and log files, so that several clusters can run one after another in one root. */
  name?: string;
}

/** Directories, lock service and storage nodes, each its own process, on loopback in `root`. */
export class BenchCluster {
  directories: Child[] = [];
  lock!: Child;
  storage: Child[] = [];
  dirUrls: string[] = [];
  readonly certs: string;
  readonly logs: string;
  /** Where this cluster's nodes keep their data (and the clients their caches). */
  readonly data: string;

  constructor(readonly root: string, private readonly opts: BenchClusterOptions) {
    this.certs = path.join(root, "certs");
    this.logs = path.join(root, "logs");
    this.data = opts.name ? path.join(root, opts.name) : root;
    fs.mkdirSync(this.logs, { recursive: true });
  }

  get directory(): Child {
    return this.directories[0]!;
  }

  async makeCerts(): Promise<void> {
    if (!fs.existsSync(path.join(this.certs, "ca.crt"))) await initCerts({ dir: this.certs });
  }

  async start(): Promise<this> {
    await this.makeCerts();
    const common = ["--port", "0", "--host", "127.0.0.1", "--certs", this.certs];
    const logName = (n: string) => (this.opts.name ? `${this.opts.name}-${n}` : n);
    const metadata = this.opts.metadata ? ["--metadata", this.opts.metadata] : [];
    const count = this.opts.directories ?? 1;
    // One after another: the first makes the schema in a shared database, the others find it made.
    for (let i = 0; i < count; i++) {
      const name = count === 1 ? "directory" : `directory-${i}`;
      const dir = await startDfs(logName(name), ["--role", "directory", ...common, "--data", path.join(this.data, name), "--replicas", String(this.opts.replicas), ...metadata], this.logs);
      this.directories.push(dir.child);
      this.dirUrls.push(dir.url);
    }
    const withDir = [...common, "--directory", this.dirUrls.join(",")];
    const [lock, ...storage] = await Promise.all([
      startDfs(logName("lock"), ["--role", "lock", ...withDir, "--data", path.join(this.data, "lock")], this.logs),
      ...Array.from({ length: this.opts.storage }, (_, i) =>
        startDfs(logName(`storage-${i}`), ["--role", "storage", ...withDir, "--data", path.join(this.data, `storage-${i}`)], this.logs),
      ),
    ]);
    this.lock = lock!.child;
    this.storage = storage.map((s) => s.child);
    await this.waitUp();
    return this;
  }

  /** Polls dir.status until every storage node and the lock service are up. */
  async waitUp(timeoutMs = 60_000): Promise<StatusReply> {
    const ch = await directoryChannel(this.dirUrls[0]!, this.certs);
    try {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const s = await ch.request<StatusReply>("dir.status", {});
        const up = (role: string) => s.nodes.filter((n) => n.role === role && n.state === "up").length;
        if (up("storage") >= this.opts.storage && up("lock") >= 1) return s;
        if (Date.now() > deadline) throw new Error(`cluster not up after ${timeoutMs} ms: ${JSON.stringify(s.nodes)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      ch.close();
    }
  }

  all(): Child[] {
    return [...this.directories, this.lock, ...this.storage].filter(Boolean);
  }

  async stop(): Promise<void> {
    await Promise.all(this.all().map((c) => c.stop()));
  }
}

/**
 * The built executable to run, or undefined to run from source: DFS_BIN when set, else `dist/dfs` when it is
 * newer than every source file (a stale build would measure old code).
 */
export function dfsBinary(): string | undefined {
  if (chosen !== null) return chosen;
  chosen = findBinary();
  return chosen;
}
let chosen: string | undefined | null = null;

function findBinary(): string | undefined {
  // Node flags such as --cpu-prof reach only a process that node itself starts.
  if (childNodeFlags.length > 0) return undefined;
  if (process.env.DFS_BIN) return path.resolve(process.env.DFS_BIN);
  const bin = path.join(ROOT, "dist/dfs");
  if (!fs.existsSync(bin)) return undefined;
  const built = fs.statSync(bin).mtimeMs;
  const newest = (dir: string): number =>
    Math.max(0, ...fs.readdirSync(dir, { withFileTypes: true }).map((e) => {
      const p = path.join(dir, e.name);
      return e.isDirectory() ? newest(p) : fs.statSync(p).mtimeMs;
    }));
  return newest(path.join(ROOT, "src")) <= built ? bin : undefined;
}

/**
 * Runs one command of the built executable to its end and measures it from the outside: wall time from spawn to
 * exit, and the peak resident set (VmHWM, which only grows) and CPU time sampled every 10 ms until it exits.
 */
export async function timeBinary(bin: string, name: string, args: string[], logDir: string): Promise<{ ms: number; peakRss: number; cpuMs: number }> {
  const err = fs.openSync(path.join(logDir, `${name}.log`), "a");
  const out = fs.openSync("/dev/null", "w");
  const t0 = performance.now();
  const proc = spawn(bin, args, { cwd: ROOT, stdio: ["ignore", out, err], env: { ...process.env, DFS_LOG_LEVEL: "warn" } });
  fs.closeSync(err);
  fs.closeSync(out);
  let peakRss = 0;
  let cpu = 0;
  const sample = () => {
    cpu = Math.max(cpu, cpuMs(proc.pid!));
    try {
      const { hwm } = readVm(proc.pid!);
      // NaN while the process is still being exec'd (no VmHWM line yet).
      if (hwm > peakRss) peakRss = hwm;
    } catch {
      // Gone between the check and the read: the last sample stands.
    }
  };
  const timer = setInterval(sample, 10);
  sample();
  const code = await new Promise<number | null>((resolve) => proc.on("exit", (c) => (clearInterval(timer), resolve(c))));
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`${name}: ${bin} ${args.join(" ")} exited with ${code}:\n${fs.readFileSync(path.join(logDir, `${name}.log`), "utf8").slice(-2000)}`);
  return { ms, peakRss, cpuMs: cpu };
}
