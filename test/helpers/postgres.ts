import type { TestContext } from "node:test";
import { createPostgres, freePort, giveToServer, PgServer, runTool, type Spawner } from "../../scripts/postgres-server.js";
import { spawnChild, tmpDir, waitFor, type Scope } from "./cluster.js";

/**
 * Throwaway PostgreSQL servers for tests (scripts/postgres-server.ts makes and runs them): a primary,
 * and synchronous standbys cloned from it with pg_basebackup. Each runs as a child of the test and is
 * killed, and its folder removed, when the test ends. A database test never skips: when PostgreSQL
 * is missing it is installed, or the test fails saying how to get it.
 */

export { PgServer };

/** Test processes, so that a test's folders are removed only once its servers have exited. */
const spawnerOf = (t: Scope): Spawner => (cmd, argv, opts) => spawnChild(t, cmd, argv, opts);

/** A folder of the test that the servers' account owns. */
function serverFolder(t: Scope, prefix: string): string {
  const dir = tmpDir(t, prefix);
  giveToServer(dir);
  return dir;
}

/** A streaming replica of a primary, cloned with pg_basebackup; its walreceiver names itself {@link name}. */
export class PgStandby extends PgServer {
  constructor(root: string, port: number, settings: string[], spawner: Spawner, readonly name: string) {
    super(root, port, settings, spawner);
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
  return createPostgres(serverFolder(t, "dfs-pg-"), [...BASE_SETTINGS, ...(opts.settings ?? [])], spawnerOf(t));
}

let standbys = 0;

/**
 * Clones `primary` into a standby that streams from it, starts it, and (with `sync`, the default)
 * makes it the primary's synchronous standby: from then on the primary acknowledges a COMMIT only
 * once this standby has flushed it.
 */
export async function startStandby(t: TestContext, primary: PgServer, opts: { sync?: boolean } = {}): Promise<PgStandby> {
  const name = `dfs_standby_${process.pid}_${++standbys}`;
  const root = serverFolder(t, "dfs-pg-standby-");
  const standby = new PgStandby(root, await freePort(), [...BASE_SETTINGS, `cluster_name=${name}`], spawnerOf(t), name);
  await runTool("pg_basebackup", ["-h", "127.0.0.1", "-p", String(primary.port), "-U", "postgres", "-D", standby.dataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync"], root);
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
