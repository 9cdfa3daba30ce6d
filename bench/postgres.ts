/**
 * The bench's own PostgreSQL server (scripts/postgres-server.ts), for `--metadata postgres`: one
 * server for the whole run, a fresh database per measurement.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createPostgres, giveToServer, type PgServer } from "../scripts/postgres-server.js";

/**
 * Durable as a production server would be (every COMMIT flushed to the WAL before it is answered, full
 * page writes), with memory and checkpoint spacing for a bulk load instead of the defaults' laptop sizes.
 */
export const BENCH_PG_SETTINGS = [
  "fsync=on", "synchronous_commit=on", "full_page_writes=on",
  "shared_buffers=1GB", "max_wal_size=8GB", "checkpoint_timeout=15min", "max_connections=100",
];

export class BenchPostgres {
  private databases = 0;

  private constructor(readonly server: PgServer, readonly folder: string, readonly version: string) {}

  /** Makes and starts the server in a temp folder of its own (the servers' account must own it, and may not reach into the bench's). */
  static async start(): Promise<BenchPostgres> {
    const folder = fs.mkdtempSync(path.join(os.tmpdir(), "dfs-bench-pg-"));
    try {
      giveToServer(folder);
      const server = await createPostgres(folder, BENCH_PG_SETTINGS);
      const [v] = await server.query("SHOW server_version");
      return new BenchPostgres(server, folder, String(v?.server_version));
    } catch (err) {
      fs.rmSync(folder, { recursive: true, force: true });
      throw err;
    }
  }

  /** A new, empty database, by URL. */
  async database(label: string): Promise<string> {
    const name = `dfs_${label}_${++this.databases}`;
    await this.server.query(`CREATE DATABASE ${name}`);
    return this.server.urlOf(name);
  }

  /** The database's files (tables, indexes, TOAST; not the WAL, which the server shares). */
  async databaseBytes(url: string): Promise<number> {
    const name = new URL(url).pathname.slice(1);
    const [r] = await this.server.query("SELECT pg_database_size($1)::bigint AS n", [name]);
    return Number(r?.n);
  }

  /** Stops the server, keeps its log beside the nodes' logs, and removes its folder (`keep`: leaves it). */
  async close(logDir: string, keep: boolean): Promise<void> {
    await this.server.stop();
    fs.writeFileSync(path.join(logDir, "postgres.log"), this.server.log);
    if (!keep) fs.rmSync(this.folder, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  }

  /** For an exit in the middle of the run: kills the server at once and removes its folder (`keep`: leaves it). */
  killNow(keep: boolean): void {
    if (this.server.alive) this.server.proc!.child.kill("SIGKILL");
    if (!keep) fs.rmSync(this.folder, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  }
}
