import assert from "node:assert/strict";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { DfsClient } from "../src/roles/client.js";
import { DfsError } from "../src/protocol/errors.js";
import { logger } from "../src/log.js";
import { startCluster, tmpDir, waitFor } from "./helpers/cluster.js";

async function text(c: DfsClient, remote: string): Promise<string> {
  const parts: Buffer[] = [];
  await c.read(remote, async (d) => void parts.push(d));
  return Buffer.concat(parts).toString();
}

test("a new file is created without the lock service; replacing a file still needs its lock", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  const client = new DfsClient({
    directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(work, "cache"), log: logger("client"), lockWaitMs: 1500,
  });
  t.after(() => client.close());
  await client.connect();
  await c.lock.kill();

  const created = await client.write("/new", [Buffer.from("first")]);
  assert.equal(created.version, 1);
  assert.equal(await text(client, "/new"), "first");

  await waitFor(async () => (await c.status()).nodes.every((n) => n.role !== "lock" || n.state !== "up"), "the lock service counted down");
  await assert.rejects(client.write("/new", [Buffer.from("second")]), (err: unknown) => {
    assert.ok(err instanceof DfsError, String(err));
    t.diagnostic(`replacing without a lock service: ${err.code}: ${err.message}`);
    return true;
  }, "an existing file is replaced only under its lock, and there is no lock service");
  assert.equal((await client.stat("/new")).version, 1, "the refused replacement changed nothing");
  assert.equal(await text(client, "/new"), "first");
});

test("a create waits for the holder of the path's lock, even while the path is still absent", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  const tls = loadCerts(c.certs, "client");
  const holder = new DfsClient({ directoryUrls: [c.dirUrl], tls, cacheDir: path.join(work, "a"), log: logger("holder") });
  const other = new DfsClient({ directoryUrls: [c.dirUrl], tls, cacheDir: path.join(work, "b"), log: logger("other") });
  t.after(() => holder.close());
  t.after(() => other.close());
  await holder.lock("/held");
  const waiting = other.write("/held", [Buffer.from("from other")]);
  const mine = await holder.write("/held", [Buffer.from("from holder")]);
  assert.equal(mine.version, 1, "the holder's write came first");
  assert.equal(await holder.unlock("/held"), true);
  const theirs = await waiting;
  assert.equal(theirs.version, 2, "the other write went through the lock, after the holder's");
  assert.equal(await text(other, "/held"), "from other");
});

test("two clients creating one path at once both succeed, one after the other", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  const tls = loadCerts(c.certs, "client");
  const clients = [0, 1, 2, 3].map((i) => new DfsClient({ directoryUrls: [c.dirUrl], tls, cacheDir: path.join(work, `c${i}`), log: logger(`c${i}`) }));
  for (const cl of clients) t.after(() => cl.close());
  const results = await Promise.all(clients.map((cl, i) => cl.write("/race", [Buffer.from(`writer ${i}`)])));
  assert.deepEqual(results.map((r) => r.version).sort(), [1, 2, 3, 4], "each write committed a version of its own");
  const last = results.find((r) => r.version === 4)!;
  assert.equal(await text(clients[0]!, "/race"), `writer ${results.indexOf(last)}`, "the last version is the last write, whole");
});
