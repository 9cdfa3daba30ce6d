import assert from "node:assert/strict";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import type { DfsError } from "../src/protocol/errors.js";
import { connect } from "../src/transport/connect.js";
import { logger } from "../src/log.js";
import { Cluster, runDfs, startCluster, waitFor } from "./helpers/cluster.js";

const DEAD_AFTER = 2;

test("a directory, a lock service and three storage nodes register; status --json lists them up", async (t) => {
  const c = await startCluster(t, { storage: 3, deadAfter: DEAD_AFTER });
  const s = await c.status();
  const storage = s.nodes.filter((n) => n.role === "storage");
  assert.equal(storage.length, 3);
  assert.equal(s.nodes.filter((n) => n.role === "lock").length, 1);
  assert.ok(s.nodes.every((n) => n.state === "up"), JSON.stringify(s.nodes));
  assert.ok(storage.every((n) => n.free > 0), "storage nodes report free space");
  assert.equal(new Set(storage.map((n) => n.url)).size, 3);
  assert.equal(s.directory.replicas, 2);

  const human = await c.client(["status"]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /storage nodes 3\/3 up/);
});

test("a killed storage node goes down after --dead-after and comes back under the same id", async (t) => {
  const c = await startCluster(t, { storage: 3, deadAfter: DEAD_AFTER });
  const before = await c.status();
  const victimUrl = c.storage[0]!.url;
  const victim = before.nodes.find((n) => n.url === victimUrl)!;
  assert.ok(victim, "victim is listed");
  const killedAt = Date.now();
  await c.storage[0]!.kill("SIGKILL");
  // dead-after plus one heartbeat, plus the time a status client process takes to start.
  await waitFor(async () => (await c.status()).nodes.find((n) => n.id === victim.id)?.state === "down", "victim down", (DEAD_AFTER + 2) * 1000 + 8000);
  assert.ok(Date.now() - killedAt >= DEAD_AFTER * 1000, "not declared down before --dead-after");
  const others = (await c.status()).nodes.filter((n) => n.role === "storage" && n.id !== victim.id);
  assert.ok(others.every((n) => n.state === "up"));

  await c.startStorage(0);
  await waitFor(async () => (await c.status()).nodes.find((n) => n.id === victim.id)?.state === "up", "victim up again");
  const after = await c.status();
  assert.equal(after.nodes.filter((n) => n.role === "storage").length, 3, "no new node id appeared");
});

test("storage and lock nodes reconnect by themselves when the directory restarts", async (t) => {
  const c = await startCluster(t, { storage: 3, deadAfter: DEAD_AFTER });
  const port = Number(new URL(c.dirUrl).port);
  const ids = (await c.status()).nodes.map((n) => n.id).sort();
  await c.directory.kill("SIGKILL");
  await c.startDirectory(port);
  const s = await c.waitUp(3);
  assert.deepEqual(s.nodes.map((n) => n.id).sort(), ids);
  assert.ok(s.nodes.every((n) => n.state === "up"));
});

test("certificate roles are enforced: a client may not register as storage, and the node keeps serving", async (t) => {
  const c = new Cluster(t, { storage: 1, deadAfter: DEAD_AFTER });
  await c.start();
  const log = logger("test");
  const asClient = await connect(c.dirUrl, { tls: loadCerts(c.certs, "client"), log });
  t.after(() => asClient.close());
  const body = { kind: "storage", id: "intruder", url: "wss://127.0.0.1:1", secret: "ab".repeat(32) };
  await assert.rejects(asClient.request("dir.register", body), (e: DfsError) => e.code === "FORBIDDEN");
  await assert.rejects(asClient.request("dir.stored", { chunks: [{ hash: "a".repeat(64), size: 1, gen: 1 }] }), { code: "FORBIDDEN" });

  const asStorage = await connect(c.dirUrl, { tls: loadCerts(c.certs, "storage"), log });
  t.after(() => asStorage.close());
  await assert.rejects(asStorage.request("dir.register", { ...body, kind: "lock" }), { code: "FORBIDDEN" });

  const s = await c.status();
  assert.ok(!s.nodes.some((n) => n.id === "intruder"));
  assert.equal(s.nodes.filter((n) => n.state === "up").length, 2);
});

test("clear errors: directory unreachable, missing certificates, unknown role and command, port in use", async (t) => {
  const c = await startCluster(t, { storage: 1, deadAfter: DEAD_AFTER });
  const unreachable = await runDfs(t, ["--role", "client", "--directory", "wss://127.0.0.1:1", "--certs", c.certs, "status"]);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /cannot reach directory at wss:\/\/127\.0\.0\.1:1: connection refused/);
  assert.equal(unreachable.stderr.trim().split("\n").length, 1, "one line");

  const noCerts = await runDfs(t, ["--role", "client", "--certs", path.join(c.root, "nowhere"), "status"]);
  assert.equal(noCerts.code, 1);
  assert.match(noCerts.stderr, /dfs certs init/);

  const badRole = await runDfs(t, ["--role", "sorage"]);
  assert.notEqual(badRole.code, 0);
  assert.match(badRole.stderr, /unknown role "sorage"/);

  const badCmd = await c.client(["frobnicate"]);
  assert.equal(badCmd.code, 1);
  assert.match(badCmd.stderr, /unknown command "frobnicate"/);

  const port = new URL(c.dirUrl).port;
  const clash = await runDfs(t, ["--role", "directory", "--port", port, "--data", path.join(c.root, "d2"), "--certs", c.certs]);
  assert.equal(clash.code, 1);
  assert.match(clash.stderr, new RegExp(`port ${port} .*already in use`));
});
