/**
 * Throwaway PostgreSQL servers on loopback, each in a folder of its own, for the tests
 * (test/helpers/postgres.ts) and the bench (bench/postgres.ts). Whoever starts a server owns it and
 * stops it; nothing here knows of a test runner. When the server programs are missing, they are
 * installed (as root, by scripts/ensure-postgres.sh) or the caller fails saying how to get them.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import postgres from "postgres";

const execFileP = promisify(execFile);
const SCRIPTS = path.dirname(fileURLToPath(import.meta.url));

/** The unprivileged account the servers run as when this process is root (PostgreSQL refuses root). */
const PG_OS_USER = "dfs-pg";

interface RunAs {
  uid?: number;
  gid?: number;
}

/** A running server program as its owner sees it; the tests' process type fits, so they keep their own cleanup. */
export interface ServerProcess {
  readonly child: ChildProcess;
  /** Everything the program wrote to stderr so far (where PostgreSQL logs). */
  readonly stderr: string;
  readonly exited: Promise<number | null>;
  readonly alive: boolean;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface SpawnOptions {
  cwd: string;
  env: NodeJS.ProcessEnv;
  uid?: number;
  gid?: number;
  /** How the process is named in failure reports. */
  args: string[];
}

/** Starts a server program; the default is {@link spawnServer}. */
export type Spawner = (cmd: string, argv: string[], opts: SpawnOptions) => ServerProcess;

const running = new Set<ChildProcess>();

/** Starts a program whose stderr is kept; it is killed if this process exits first, so no server outlives its owner. */
const spawnServer: Spawner = (cmd, argv, opts) => {
  const child = spawn(cmd, argv, { cwd: opts.cwd, env: opts.env, stdio: ["ignore", "ignore", "pipe"], uid: opts.uid, gid: opts.gid });
  if (running.size === 0) process.once("exit", () => void [...running].forEach((c) => c.kill("SIGKILL")));
  running.add(child);
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => (running.delete(child), resolve(code))));
  const alive = () => child.exitCode === null && child.signalCode === null;
  return {
    child,
    exited,
    get stderr() {
      return stderr;
    },
    get alive() {
      return alive();
    },
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      if (alive()) child.kill(signal);
      await exited;
    },
  };
};

let found: { bin: string; runAs: RunAs } | undefined;

/** Where the server programs are and whom they run as, installing PostgreSQL once when missing. */
function pgSetup(): { bin: string; runAs: RunAs } {
  if (found) return found;
  let bin = locateBinaries();
  if (!bin) {
    try {
      execFileSync("bash", [path.join(SCRIPTS, "ensure-postgres.sh")], { stdio: ["ignore", "pipe", "pipe"], timeout: 600_000 });
    } catch (err) {
      const said = (err as { stderr?: Buffer }).stderr?.toString().trim();
      throw new Error(`PostgreSQL is needed here and could not be had: ${said || (err as Error).message}`);
    }
    bin = locateBinaries();
    if (!bin) throw new Error("PostgreSQL is needed here: scripts/ensure-postgres.sh ran, yet no server programs were found");
  }
  found = { bin, runAs: serverAccount() };
  return found;
}

/** DFS_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin that holds a server. */
function locateBinaries(): string | undefined {
  if (process.env.DFS_PG_BIN) return fs.existsSync(path.join(process.env.DFS_PG_BIN, "postgres")) ? process.env.DFS_PG_BIN : undefined;
  const base = "/usr/lib/postgresql";
  const versions = fs.existsSync(base) ? fs.readdirSync(base).filter((v) => /^\d+(\.\d+)?$/.test(v)) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  return versions.map((v) => path.join(base, v, "bin")).find((d) => fs.existsSync(path.join(d, "postgres")));
}

function serverAccount(): RunAs {
  if (process.getuid?.() !== 0) return {};
  const ids = () => {
    try {
      const id = (flag: string) => Number(execFileSync("id", [flag, PG_OS_USER], { stdio: ["ignore", "pipe", "pipe"] }).toString());
      return { uid: id("-u"), gid: id("-g") };
    } catch {
      return undefined;
    }
  };
  const have = ids();
  if (have) return have;
  try {
    execFileSync("useradd", ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", PG_OS_USER], {
      stdio: ["ignore", "pipe", "pipe"],
    });
  } catch (err) {
    // Another process may have made the account at the same moment (useradd exits 9 then).
    if (!ids()) throw new Error(`could not create the OS user ${PG_OS_USER} to run PostgreSQL as: ${(err as { stderr?: Buffer }).stderr?.toString() ?? err}`);
  }
  return ids()!;
}

/** Hands `dir` to the servers' account, which must be able to write there. */
export function giveToServer(dir: string): void {
  const { runAs } = pgSetup();
  if (runAs.uid !== undefined) fs.chownSync(dir, runAs.uid, runAs.gid!);
}

/** The environment of the server programs: English messages, and none of this process's PG* settings. */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { LC_ALL: "C", LANG: "C", TZ: "UTC" };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("PG") && !(k in env)) env[k] = v;
  return env;
}

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => srv.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

/** Runs one of the server's tools (initdb, pg_basebackup) as the servers' account. */
export async function runTool(tool: string, args: string[], cwd: string): Promise<void> {
  const { bin, runAs } = pgSetup();
  try {
    await execFileP(path.join(bin, tool), args, { ...runAs, cwd, env: serverEnv(), timeout: 120_000 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${tool} ${args.join(" ")} failed: ${e.stderr || e.stdout || e.message}`);
  }
}

/** One PostgreSQL server in `root`, run as a child of this process. */
export class PgServer {
  proc?: ServerProcess;

  constructor(
    /** The server's folder: `data/` and the unix socket folder `sock/`; the servers' account owns it. */
    readonly root: string,
    public port: number,
    protected readonly settings: string[],
    protected readonly spawner: Spawner = spawnServer,
  ) {}

  get dataDir(): string {
    return path.join(this.root, "data");
  }

  /** A URL for this server alone (superuser `postgres`, trusted on loopback). */
  get url(): string {
    return this.urlOf("postgres");
  }

  /** The URL of one of its databases. */
  urlOf(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  get alive(): boolean {
    return this.proc?.alive ?? false;
  }

  /** Everything the server logged. */
  get log(): string {
    return this.proc?.stderr ?? "";
  }

  /** Starts the server on its port and waits until it takes connections; a port taken meanwhile by someone else gets another. */
  async start(): Promise<void> {
    const { bin, runAs } = pgSetup();
    const sock = path.join(this.root, "sock");
    fs.mkdirSync(sock, { recursive: true });
    giveToServer(sock);
    for (let attempt = 0; ; attempt++) {
      const args = ["-D", this.dataDir, "-p", String(this.port), "-k", sock, "-c", "listen_addresses=127.0.0.1", ...this.settings.flatMap((s) => ["-c", s])];
      const proc = this.spawner(path.join(bin, "postgres"), args, { ...runAs, cwd: this.root, env: serverEnv(), args: [`postgres:${this.port}`] });
      this.proc = proc;
      try {
        await this.ready(proc, 60_000);
        return;
      } catch (err) {
        if (attempt >= 4 || !/could not bind|Address already in use/.test(proc.stderr)) throw err;
        await proc.kill();
        this.port = await freePort();
      }
    }
  }

  private async ready(proc: ServerProcess, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!/database system is ready to accept (read-only )?connections/.test(proc.stderr)) {
      if (!proc.alive) throw new Error(`PostgreSQL on port ${this.port} exited with ${proc.child.exitCode ?? proc.child.signalCode} while starting:\n${proc.stderr}`);
      if (Date.now() > deadline) throw new Error(`PostgreSQL on port ${this.port} did not start within ${timeoutMs} ms:\n${proc.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Runs one statement on a connection of its own (so that it works whatever state other clients are in). */
  async query(text: string, params: (string | number | null)[] = [], database = "postgres"): Promise<Record<string, unknown>[]> {
    const sql = postgres(this.urlOf(database), { max: 1, connect_timeout: 10, onnotice: () => {} });
    try {
      return [...(await sql.unsafe(text, params))];
    } finally {
      await sql.end({ timeout: 1 });
    }
  }

  /** Sends `signal` to the postmaster and, for a signal that ends it, waits until it has exited. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (!this.proc?.alive) return;
    if (signal === "SIGKILL") return this.proc.kill("SIGKILL");
    this.proc.child.kill(signal);
    if (["SIGTERM", "SIGINT", "SIGQUIT"].includes(signal)) await this.proc.exited;
  }

  /** A fast shutdown (SIGINT: sessions are ended, nothing acknowledged is lost), SIGKILL if it takes over 15 s. Idempotent. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc?.alive) return;
    proc.child.kill("SIGINT");
    const timer = setTimeout(() => proc.child.kill("SIGKILL"), 15_000);
    await proc.exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

/**
 * Makes a new server in `root` (an empty folder the servers' account owns) with `settings`
 * (`name=value`), and starts it on a free loopback port.
 */
export async function createPostgres(root: string, settings: string[], spawner?: Spawner): Promise<PgServer> {
  const server = new PgServer(root, await freePort(), settings, spawner);
  // --no-sync: the cluster's files are new and thrown away with the folder; the server itself runs with the settings given.
  await runTool("initdb", ["-D", server.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"], root);
  await server.start();
  return server;
}
