import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import type { DfsError } from "../src/protocol/errors.js";
import type { FileInfo } from "../src/protocol/directory.js";
import { DfsClient } from "../src/roles/client.js";
import { freeAddress, runDfs, startCluster, tmpDir, waitFor } from "./helpers/cluster.js";
import { HoldingProxy } from "./helpers/proxy.js";

const CHUNK = 65536;
const portOf = (url: string) => Number(new URL(url).port);

test("nodes and a REPL session given --directory A,B carry on by themselves when the directory moves from A to B", async (t) => {
  const B = await freeAddress();
  const c = await startCluster(t, { storage: 3, directoryArgs: ["--chunk-size", String(CHUNK)], directories: (a) => [a, B] });
  const A = c.dirUrl;
  const work = tmpDir(t);
  const data = randomBytes(5 * CHUNK + 123);
  fs.writeFileSync(path.join(work, "a"), data);
  fs.writeFileSync(path.join(work, "b"), "written after the move");
  const repl = c.session(path.join(work, "cache"), { cwd: work });
  repl.child.stdin!.write("write /a a\n");
  await waitFor(() => /wrote \/a v1/.test(repl.stdout), "the first write");
  const servers = [c.lock, ...c.storage].map((p) => ({ p, pid: p.child.pid }));

  await c.directory.kill("SIGKILL");
  await c.startDirectory(portOf(B));
  // Nobody restarts or reconfigures the nodes: they find the directory at B by themselves and register there.
  const s = await c.waitUp(3);
  assert.equal(s.directory.url, B);
  assert.notEqual(B, A);
  assert.equal((s.directory as { reachedAt?: string }).reachedAt, B, "status says which address answered");
  for (const { p, pid } of servers) assert.ok(p.alive && p.child.pid === pid, "the same node processes");

  // Every chunk of /a is listed again on two live nodes, and a cold read gets the file whole.
  await waitFor(async () => {
    const r = await c.client(["stat", "/a", "--json"]);
    const info = JSON.parse(r.stdout) as FileInfo;
    return info.chunks.length === 6 && info.chunks.every((ch) => ch.replicas.length === 2);
  }, "both replicas of every chunk of /a reported again");
  const cold = await c.client(["read", "/a", "a.cold"], { cwd: work, cache: path.join(work, "cold") });
  assert.equal(cold.code, 0, cold.stderr);
  assert.deepEqual(fs.readFileSync(path.join(work, "a.cold")), data);

  // The REPL session opened before the move goes on: a write, a read, and a lock others must respect.
  repl.child.stdin!.write("write /b b\nread /a a.again\nlock /l\n");
  await waitFor(() => /wrote \/b v1/.test(repl.stdout), "a write after the move", 60_000);
  await waitFor(() => /locked \/l/.test(repl.stdout), "a lock after the move");
  assert.deepEqual(fs.readFileSync(path.join(work, "a.again")), data);
  const refused = await c.client(["lock", "/l"]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /\/l is locked by/);
  repl.child.stdin!.write("unlock /l\n");
  await waitFor(() => /unlocked \/l/.test(repl.stdout), "the unlock");
  const taken = await c.client(["lock", "/l"]);
  assert.equal(taken.code, 0, taken.stderr);
  repl.child.stdin!.end("exit\n");
  assert.equal(await repl.exited, 0, `no command of the session failed:\n${repl.stderr}`);
  assert.equal((await c.client(["cat", "/b"])).stdout, "written after the move");
});

test("a --directory list whose first address never answers works from the start", async (t) => {
  const nowhere = await freeAddress();
  // startCluster waits for the lock service and both storage nodes to register, through the second address.
  const c = await startCluster(t, { storage: 2, directories: (a) => [nowhere, a] });
  const w = await c.client(["write", "/x", "-"], { stdin: "through the second address" });
  assert.equal(w.code, 0, w.stderr);
  // Clients start at a random address: a few of them take either first.
  for (let i = 0; i < 3; i++) {
    const r = await c.client(["cat", "/x"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "through the second address");
  }
  const s = await c.client(["status"]);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, new RegExp(`^directory ${c.dirUrl} `));
});

test("a bad --directory list is refused at start-up with one line", async (t) => {
  const tries: { args: string[]; env?: NodeJS.ProcessEnv; says: RegExp }[] = [
    { args: ["--role", "client", "--directory", "wss://127.0.0.1:9000,,wss://127.0.0.1:9001", "status"], says: /has an empty entry/ },
    { args: ["--role", "storage", "--directory", "wss://127.0.0.1:9000,"], says: /has an empty entry/ },
    { args: ["--role", "client", "--directory", "https://127.0.0.1:9000", "status"], says: /must start with wss:\/\// },
    { args: ["--role", "lock", "--directory", "wss://127.0.0.1:9000,wss://127.0.0.1:9000/"], says: /wss:\/\/127\.0\.0\.1:9000\/ is listed twice/ },
    { args: ["--role", "storage"], env: { DFS_DIRECTORY: "wss://127.0.0.1:9000,ws://127.0.0.1:9001" }, says: /ws:\/\/127\.0\.0\.1:9001 must start with wss:\/\/.*comes from DFS_DIRECTORY/ },
  ];
  // The exit code of any other bad option.
  const other = await runDfs(t, ["--role", "nonsense"], { timeoutMs: 60_000 });
  assert.notEqual(other.code, 0);
  for (const { args, env, says } of tries) {
    const r = await runDfs(t, args, { env, timeoutMs: 60_000 });
    assert.equal(r.code, other.code, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /^dfs: --directory: [^\n]+\n$/, args.join(" "));
    assert.match(r.stderr, says);
    assert.equal(r.stdout, "");
  }
});

test("a change in flight when the directory dies is reported as of unknown outcome, never as done", async (t) => {
  const B = await freeAddress();
  const c = await startCluster(t, { storage: 2, directories: (a) => [a, B] });
  const work = tmpDir(t);
  // The client reaches A through a proxy that can hold its requests; its other address is B.
  const proxy = await HoldingProxy.start(t, { upstream: c.dirUrl, serverTls: loadCerts(c.certs, "directory"), clientTls: loadCerts(c.certs, "client") });
  const client = new DfsClient({ directoryUrls: [proxy.url, B], tls: loadCerts(c.certs, "client"), cacheDir: path.join(work, "cache"), log: logger("client") });
  t.after(() => client.close());
  await client.write("/keep", [Buffer.from("kept")]);

  proxy.hold((dir, type) => dir === "up" && (type === "dir.commit" || type === "dir.remove"));
  const outcome = (p: Promise<unknown>) => p.then(() => "reported as done", (e: DfsError) => e);
  const writing = outcome(client.write("/new", [Buffer.from("never committed")]));
  const removing = outcome(client.rm("/keep"));
  await waitFor(() => proxy.heldTypes.length === 2, "the commit and the remove sent and held");
  await c.directory.kill("SIGKILL");
  for (const [what, p] of [["write", writing], ["rm", removing]] as const) {
    const err = await p;
    assert.notEqual(err, "reported as done", `${what}: a change whose answer was lost with the connection must be reported as of unknown outcome, not sent again`);
    const e = err as DfsError;
    assert.equal(e.code, "UNAVAILABLE", `${what}: ${e.message}`);
    assert.equal(e.details?.outcome, "unknown", `${what}: ${e.message}`);
    assert.match(e.message, /may or may not have been made/);
  }
  await proxy.close();
  await c.startDirectory(portOf(B));
  // Neither change was made (the proxy never delivered them): had the client said "done", it would have lied.
  await assert.rejects(client.stat("/new"), { code: "NOT_FOUND" });
  assert.equal((await client.stat("/keep")).version, 1);
  // The same client goes on at B, and makes both changes for sure this time (once the storage nodes, which may
  // be in a backoff of a few seconds between rounds over A and B, registered there: --dead-after is 3 s here).
  await c.waitUp(2);
  assert.equal((await client.write("/new", [Buffer.from("committed")])).version, 1);
  await client.rm("/keep");
  await assert.rejects(client.stat("/keep"), { code: "NOT_FOUND" });
});
