import assert from "node:assert/strict";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { initCerts } from "../src/certs/index.js";
import { runDfs, spawnDfs, tmpDir, type RunResult } from "./helpers/cluster.js";

const PASSWORD = "s3cret-pw";

/** Starts dfs with `args` and expects it to stop at once with one line on stderr that matches `re`. */
async function refused(t: TestContext, args: string[], re: RegExp, env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const r = await runDfs(t, args, { env: { DFS_LOG_LEVEL: "debug", ...env } });
  assert.equal(r.code, 1, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, re);
  assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
  assert.ok(!(r.stdout + r.stderr).includes(PASSWORD), `the password is not shown: ${r.stderr}`);
  return r;
}

test("--metadata: bad values get one line naming the problem, never the password", async (t) => {
  const certs = path.join(tmpDir(t), "nowhere");
  const dir = ["--role", "directory", "--port", "0", "--certs", certs, "--data", tmpDir(t)];
  await Promise.all([
    refused(t, [...dir, "--metadata", "sqlit"], /--metadata: "sqlit" is neither sqlite nor a PostgreSQL URL like postgres:\/\//),
    refused(t, [...dir, "--metadata", `dfs:${PASSWORD}@db1/dfs`], /--metadata: the value is neither sqlite nor a PostgreSQL URL/),
    refused(t, [...dir, "--metadata", `mysql://dfs:${PASSWORD}@db1/dfs`], /--metadata: unknown back end mysql:\/\/; use sqlite or a PostgreSQL URL/),
    refused(t, [...dir, "--metadata", `postgres://dfs:${PASSWORD}@db1:99999/dfs`], /--metadata: bad port in PostgreSQL URL postgres:\/\/dfs:\*\*\*@db1:99999\/dfs/),
    refused(t, [...dir, "--metadata", `postgres://dfs:${PASSWORD}@db1/dfs?target_session_attrs=standby`], /target_session_attrs=standby cannot serve metadata/),
    // A raw "/" or "@" in the password would move the host; the message shows the URL with the password hidden.
    refused(t, [...dir, "--metadata", `postgres://dfs:${PASSWORD}/x@db1/dfs`], /the password in postgres:\/\/dfs:\*\*\*@db1\/dfs holds a character that must be percent-encoded/),
    refused(t, [...dir, "--metadata", `postgres://dfs:${PASSWORD}@x@db1/dfs`], /the password in postgres:\/\/dfs:\*\*\*@db1\/dfs holds a character that must be percent-encoded/),
    refused(t, [...dir, "--metadata", `postgres://dfs:${PASSWORD}@db1/dfs`, "--meta-dir", "/m2"], /--meta-dir: only for the embedded store/),
    refused(t, [...dir, "--metadata", `postgres://dfs:${PASSWORD}@db1/dfs`, "--snapshot-every", "5"], /--snapshot-every: only for the embedded store/),
    refused(t, dir, /--metadata: unknown back end redis:\/\/.*; the value comes from DFS_METADATA/, { DFS_METADATA: `redis://:${PASSWORD}@cache/0` }),
  ]);
});

test("--metadata on a process without the directory role is refused; DFS_METADATA is left to the directory", async (t) => {
  const work = tmpDir(t);
  const certs = path.join(work, "certs");
  const url = `postgres://dfs:${PASSWORD}@127.0.0.1:1/dfs`;
  await Promise.all(["storage", "lock", "storage,lock", "client"].map((role) =>
    refused(t, ["--role", role, "--certs", certs, "--metadata", url], /--metadata is for processes with the directory role: lock and storage processes and clients keep no metadata of their own/)));
  // One environment file may be shared by every process of a host.
  await initCerts({ dir: certs });
  const storage = spawnDfs(t, ["--role", "storage", "--port", "0", "--certs", certs, "--data", path.join(work, "s"), "--directory", "wss://127.0.0.1:1"], {
    env: { DFS_METADATA: url },
  });
  await storage.listening();
  await storage.kill();
});

test("a directory started with --metadata sqlite runs as without it; a PostgreSQL URL's password is never printed", async (t) => {
  const work = tmpDir(t);
  const certs = path.join(work, "certs");
  await initCerts({ dir: certs });
  const dir = spawnDfs(t, ["--role", "directory", "--port", "0", "--certs", certs, "--data", path.join(work, "d"), "--metadata", "sqlite"]);
  await dir.listening();
  await dir.kill();

  const pg = await runDfs(t, ["--role", "directory", "--port", "0", "--certs", certs, "--data", path.join(work, "p"), "--metadata", `postgres://dfs:${PASSWORD}@127.0.0.1:1/dfs`], {
    env: { DFS_LOG_LEVEL: "debug" },
  });
  assert.equal(pg.code, 1, pg.stdout + pg.stderr);
  assert.ok(!(pg.stdout + pg.stderr).includes(PASSWORD), `the password is not shown: ${pg.stderr}`);
});

test("--help names --metadata, DFS_METADATA and an example", async (t) => {
  const r = await runDfs(t, ["--help"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /--metadata <url>/);
  assert.match(r.stdout, /env: DFS_METADATA/);
  assert.match(r.stdout, /dfs --role directory --metadata postgres:\/\/\S+/);
});
