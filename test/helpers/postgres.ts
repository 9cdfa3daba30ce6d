import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import type { TestContext } from "node:test";
import { promisify } from "node:util";
import postgres from "postgres";
import { Proc, ROOT, spawnChild, tmpDir, waitFor, type Scope } from "./cluster.js";

/**
 * Throwaway PostgreSQL servers for tests: a primary in a temp folder on a free loopback port, and
 * synchronous standbys cloned from it with pg_basebackup. Each runs as a child of the test and is
 * killed, and its folder removed, when the test ends. When PostgreSQL is missing, it is installed
 * (as root) or the test fails saying how to get it: a database test never skips.
 */

const execFileP = promisify(execFile);

/** The unprivileged account the servers run as when the tests run as root (PostgreSQL refuses root). */
const PG_OS_USER = "dfs-pg";

interface RunAs {
  uid?: number;
  gid?: number;
}

let found: { bin: string; runAs: RunAs } | undefined;

/** Where the server programs are and whom they run as, installing PostgreSQL once when missing. */
function setup(): { bin: string; runAs: RunAs } {
  if (found) return found;
  let bin = locateBinaries();
  if (!bin) {
    try {
      execFileSync("bash", [path.join(ROOT, "scripts/ensure-postgres.sh")], { stdio: ["ignore", "pipe", "pipe"], timeout: 600_000 });
    } catch (err) {
      const said = (err as { stderr?: Buffer }).stderr?.toString().trim();
      throw new Error(`PostgreSQL is needed for this test and could not be had: ${said || (err as Error).message}`);
    }
    bin = locateBinaries();
    if (!bin) throw new Error("PostgreSQL is needed for this test: scripts/ensure-postgres.sh ran, yet no server programs were found");
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
    // Another test process may have made the account at the same moment (useradd exits 9 then).
    if (!ids()) throw new Error(`could not create the OS user ${PG_OS_USER} to run PostgreSQL as: ${(err as { stderr?: Buffer }).stderr?.toString() ?? err}`);
  }
  return ids()!;
}

/** The environment of the server programs: English messages, and none of this process's PG* settings. */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { LC_ALL: "C", LANG: "C", TZ: "UTC" };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("PG") && !(k in env)) env[k] = v;
  return env;
}

/** A folder of the test that the server's account owns. */
function serverFolder(t: Scope, prefix: string, runAs: RunAs): string {
  const dir = tmpDir(t, prefix);
  if (runAs.uid !== undefined) fs.chownSync(dir, runAs.uid, runAs.gid!);
  return dir;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => srv.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

async function runTool(bin: string, tool: string, args: string[], runAs: RunAs, cwd: string): Promise<void> {
  try {
    await execFileP(path.join(bin, tool), args, { ...runAs, cwd, env: serverEnv(), timeout: 120_000 });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${tool} ${args.join(" ")} failed: ${e.stderr || e.stdout || e.message}`);
  }
}

/** One PostgreSQL server of a test. */
export class PgServer {
  proc!: Proc;

  constructor(
    protected readonly t: Scope,
    /** The server's temp folder: `data/` and the unix socket folder `sock/`. */
    readonly root: string,
    public port: number,
    protected readonly settings: string[],
  ) {}

  get dataDir(): string {
    return path.join(this.root, "data");
  }

  /** A URL for this server alone (superuser `postgres`, trusted on loopback). */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
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
    const { bin, runAs } = setup();
    const sock = path.join(this.root, "sock");
    fs.mkdirSync(sock, { recursive: true });
    if (runAs.uid !== undefined) fs.chownSync(sock, runAs.uid, runAs.gid!);
    for (let attempt = 0; ; attempt++) {
      const args = ["-D", this.dataDir, "-p", String(this.port), "-k", sock, "-c", "listen_addresses=127.0.0.1", ...this.settings.flatMap((s) => ["-c", s])];
      this.proc = spawnChild(this.t, path.join(bin, "postgres"), args, { ...runAs, cwd: this.root, env: serverEnv(), args: [`postgres:${this.port}`] });
      try {
        await Promise.race([
          waitFor(() => /database system is ready to accept (read-only )?connections/.test(this.proc.stderr), `PostgreSQL on port ${this.port} to start`, 60_000, 20),
          this.proc.exited.then((code) => {
            throw new Error(`PostgreSQL on port ${this.port} exited with ${code} while starting:\n${this.proc.stderr}`);
          }),
        ]);
        return;
      } catch (err) {
        if (attempt >= 4 || !/could not bind|Address already in use/.test(this.proc.stderr)) throw err;
        await this.proc.kill();
        this.port = await freePort();
      }
    }
  }

  /** Runs one statement on a connection of its own (so that it works whatever state other clients are in). */
  async query(text: string, params: (string | number | null)[] = []): Promise<Record<string, unknown>[]> {
    const sql = postgres(this.url, { max: 1, connect_timeout: 10, onnotice: () => {} });
    try {
      return [...(await sql.unsafe(text, params))];
    } finally {
      await sql.end({ timeout: 1 });
    }
  }

  /** Sends `signal` to the postmaster and, for a signal that ends it, waits until it has exited. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (!this.alive) return;
    if (signal === "SIGKILL") return this.proc.kill("SIGKILL");
    this.proc.child.kill(signal);
    if (["SIGTERM", "SIGINT", "SIGQUIT"].includes(signal)) await this.proc.exited;
  }

  /** A fast shutdown (SIGINT: sessions are ended, nothing acknowledged is lost), SIGKILL if it takes over 15 s. Idempotent. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    this.proc.child.kill("SIGINT");
    const timer = setTimeout(() => this.proc.child.kill("SIGKILL"), 15_000);
    await this.proc.exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

/** A streaming replica of a primary, cloned with pg_basebackup; its walreceiver names itself {@link name}. */
export class PgStandby extends PgServer {
  constructor(t: TestContext, root: string, port: number, settings: string[], readonly name: string) {
    super(t, root, port, settings);
  }

  /** Ends recovery (`pg_promote()`) and waits until the server takes writes. */
  async promote(): Promise<void> {
    const [r] = await this.query("SELECT pg_promote(true, 60) AS done");
    if (r?.done !== true) throw new Error(`standby ${this.name} did not finish its promotion within 60 s`);
    await waitFor(async () => (await this.query("SELECT pg_is_in_recovery() AS r"))[0]?.r === false, `standby ${this.name} out of recovery`);
  }
}

/** Server settings of every test database: durable commits, and small enough for a laptop. */
const BASE_SETTINGS = ["fsync=on", "synchronous_commit=on", "shared_buffers=16MB", "max_connections=60", "max_wal_senders=5", "wal_level=replica"];

/** Starts a fresh primary for the test; `settings` are extra `name=value` server settings. */
export async function startPostgres(t: Scope, opts: { settings?: string[] } = {}): Promise<PgServer> {
  const { bin, runAs } = setup();
  const server = new PgServer(t, serverFolder(t, "dfs-pg-", runAs), await freePort(), [...BASE_SETTINGS, ...(opts.settings ?? [])]);
  await runTool(bin, "initdb", ["-D", server.dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"], runAs, server.root);
  await server.start();
  return server;
}

let standbys = 0;

/**
 * Clones `primary` into a standby that streams from it, starts it, and (with `sync`, the default)
 * makes it the primary's synchronous standby: from then on the primary acknowledges a COMMIT only
 * once this standby has flushed it.
 */
export async function startStandby(t: TestContext, primary: PgServer, opts: { sync?: boolean } = {}): Promise<PgStandby> {
  const { bin, runAs } = setup();
  const name = `dfs_standby_${process.pid}_${++standbys}`;
  const root = serverFolder(t, "dfs-pg-standby-", runAs);
  const standby = new PgStandby(t, root, await freePort(), [...BASE_SETTINGS, `cluster_name=${name}`], name);
  await runTool(bin, "pg_basebackup", ["-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres", "-D", standby.dataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync"], runAs, root);
  await standby.start();
  if (opts.sync ?? true) {
    await primary.query(`ALTER SYSTEM SET synchronous_standby_names = '${name}'`);
    await primary.query("SELECT pg_reload_conf()");
    await waitFor(
      async () => (await primary.query("SELECT sync_state FROM pg_stat_replication WHERE application_name = $1", [name]))[0]?.sync_state === "sync",
      `standby ${name} to be synchronous`,
    );
  }
  return standby;
}

/** A URL naming several servers, of which the client takes the one that accepts writes. */
export function multiHostUrl(...servers: PgServer[]): string {
  return `postgres://postgres@${servers.map((s) => `127.0.0.1:${s.port}`).join(",")}/postgres?target_session_attrs=read-write`;
}
