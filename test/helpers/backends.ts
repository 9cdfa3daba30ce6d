import { after, before, describe } from "node:test";
import type { Scope } from "./cluster.js";
import { startPostgres, type PgServer } from "./postgres.js";

/** Where a test cluster's directory keeps its metadata. */
export type Backend = "sqlite" | "postgres";

const BACKENDS: readonly Backend[] = ["sqlite", "postgres"];

/**
 * The back ends to run, from DFS_TEST_BACKENDS (a comma list, e.g. `postgres`); default all. A name
 * that is not a back end fails the file rather than running nothing.
 */
export function testBackends(): Backend[] {
  const text = process.env.DFS_TEST_BACKENDS?.trim();
  if (!text) return [...BACKENDS];
  const names = text.split(",").map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (!(BACKENDS as readonly string[]).includes(n)) throw new Error(`DFS_TEST_BACKENDS: unknown back end ${JSON.stringify(n)}; back ends are ${BACKENDS.join(", ")}`);
  }
  return [...new Set(names)] as Backend[];
}

/**
 * Defines the same tests once per back end, each set in a suite named after it. The postgres suite
 * owns one PostgreSQL server, started by its first cluster and stopped when the suite ends; each
 * cluster gets a database of its own on it ({@link freshDatabase}).
 */
export function forEachBackend(body: (backend: Backend) => void): void {
  for (const backend of testBackends()) {
    describe(backend, () => {
      if (backend === "postgres") {
        before(() => void (suite = new SuiteServer()));
        after(async () => {
          const s = suite;
          suite = undefined;
          await s?.close();
        });
      }
      body(backend);
    });
  }
}

/** The PostgreSQL server of the running postgres suite, and what it started, stopped in reverse order at its end. */
class SuiteServer implements Scope {
  private readonly cleanups: (() => unknown)[] = [];
  private server?: Promise<PgServer>;
  private databases = 0;

  after(fn: () => unknown): void {
    this.cleanups.push(fn);
  }

  diagnostic(message: string): void {
    process.stderr.write(`# ${message}\n`);
  }

  /** A new, empty database; the server starts on the first call. */
  async database(): Promise<string> {
    this.server ??= (async () => {
      const server = await startPostgres(this);
      // Cleanups run last first: a clean shutdown, before the folder under the server goes.
      this.after(() => server.stop());
      return server;
    })();
    const server = await this.server;
    const name = `dfs_${++this.databases}`;
    await server.query(`CREATE DATABASE ${name}`);
    return `postgres://postgres@127.0.0.1:${server.port}/${name}`;
  }

  async close(): Promise<void> {
    let failed: unknown;
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        failed ??= err;
      }
    }
    if (failed) throw failed;
  }
}

let suite: SuiteServer | undefined;

/** The URL of a new database on the running postgres suite's server. */
export async function freshDatabase(): Promise<string> {
  if (!suite) throw new Error('a cluster with metadata "postgres" belongs in a forEachBackend suite, which owns the PostgreSQL server');
  return suite.database();
}
