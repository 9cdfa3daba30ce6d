import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { loadCerts } from "../src/certs/index.js";
import type { DfsError } from "../src/protocol/errors.js";
import type { DeleteReply } from "../src/protocol/storage.js";
import type { Channel } from "../src/transport/channel.js";
import { connect } from "../src/transport/connect.js";
import { logger } from "../src/log.js";
import { holdsChunk } from "./helpers/chunks-on-disk.js";
import { Cluster, startCluster, waitFor } from "./helpers/cluster.js";

/** A delete generation above any the directory hands out in these tests, so the generation check lets it through. */
const LATER = 1_000_000;

function chunk(): { hash: string; data: Buffer } {
  const data = randomBytes(4096);
  return { hash: createHash("sha256").update(data).digest("hex"), data };
}

function onDisk(c: Cluster, i: number, hash: string): boolean {
  return holdsChunk(path.join(c.root, `storage-${i}`), hash);
}

/** A peer holding the directory's certificate, as a background runner's orders come from. */
async function asDirectory(t: TestContext, c: Cluster, url: string): Promise<Channel> {
  const conn = await connect(url, { tls: loadCerts(c.certs, "directory"), log: logger("runner") });
  t.after(() => conn.close());
  return conn;
}

async function put(conn: Channel, data: { hash: string; data: Buffer }): Promise<void> {
  await conn.request("store.put", { hash: data.hash, gen: 0, chain: [], data: data.data });
}

function stale(epoch: number, seen: number) {
  return (e: DfsError) => {
    assert.equal(e.code, "STALE_TOKEN");
    assert.match(e.message, new RegExp(`background runner that was replaced \\(epoch ${epoch}, the node has seen ${seen}\\)`));
    return true;
  };
}

test("orders from a replaced background runner are refused, also after the node restarts", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  let s0 = await asDirectory(t, c, c.storage[0]!.url);
  const s1 = await asDirectory(t, c, c.storage[1]!.url);
  const [a, b, x, y, z] = [chunk(), chunk(), chunk(), chunk(), chunk()];
  for (const ch of [a, b]) await put(s0, ch);
  // Only node 1 holds these, so a copy to node 0 shows whether it acted.
  for (const ch of [x, y, z]) await put(s1, ch);
  const copyOrder = (ch: { hash: string }, epoch?: number) =>
    ({ gen: 1, ...(epoch === undefined ? {} : { epoch }), chunks: [{ hash: ch.hash, from: [c.storage[1]!.url] }] });

  const first = await s0.request<DeleteReply>("store.delete", { hashes: [a.hash], gen: LATER, epoch: 5 });
  assert.deepEqual(first.deleted, [a.hash]);
  assert.equal(onDisk(c, 0, a.hash), false);

  await assert.rejects(s0.request("store.delete", { hashes: [b.hash], gen: LATER, epoch: 4 }), stale(4, 5));
  assert.equal(onDisk(c, 0, b.hash), true, "a refused delete leaves the chunk");
  await assert.rejects(s0.request("store.copy", copyOrder(x, 4)), stale(4, 5));
  assert.equal(onDisk(c, 0, x.hash), false, "a refused copy fetches nothing");

  assert.deepEqual((await s0.request<{ copied: number }>("store.copy", copyOrder(x, 5))).copied, 1);
  assert.equal(onDisk(c, 0, x.hash), true);

  await c.storage[0]!.kill("SIGKILL");
  const restarted = await c.startStorage(0);
  await waitFor(() => /registered with directory/.test(restarted.stderr), "the restarted node registered");
  s0 = await asDirectory(t, c, restarted.url);

  await assert.rejects(s0.request("store.delete", { hashes: [b.hash], gen: LATER, epoch: 4 }), stale(4, 5));
  await assert.rejects(s0.request("store.copy", copyOrder(y, 4)), stale(4, 5));
  assert.equal(onDisk(c, 0, b.hash), true);
  assert.equal(onDisk(c, 0, y.hash), false);

  assert.deepEqual((await s0.request<DeleteReply>("store.delete", { hashes: [b.hash], gen: LATER, epoch: 5 })).deleted, [b.hash]);
  assert.equal(onDisk(c, 0, b.hash), false);

  // A directory that runs alone sends no epoch, and its orders are carried out as before.
  assert.equal((await s0.request<{ copied: number }>("store.copy", copyOrder(z))).copied, 1);
  assert.equal(onDisk(c, 0, z.hash), true);
  assert.deepEqual((await s0.request<DeleteReply>("store.delete", { hashes: [x.hash, z.hash], gen: LATER })).deleted, [x.hash, z.hash]);
  assert.equal(onDisk(c, 0, x.hash) || onDisk(c, 0, z.hash), false);
});

test("a malformed epoch is BAD_REQUEST and the node keeps serving", async (t) => {
  const c = await startCluster(t, { storage: 1 });
  const s0 = await asDirectory(t, c, c.storage[0]!.url);
  const a = chunk();
  await put(s0, a);
  for (const epoch of [-1, "5", 1.5, null]) {
    await assert.rejects(s0.request("store.delete", { hashes: [a.hash], gen: LATER, epoch }), { code: "BAD_REQUEST" }, `delete, epoch ${String(epoch)}`);
    await assert.rejects(
      s0.request("store.copy", { gen: LATER, epoch, chunks: [{ hash: a.hash, from: [c.storage[0]!.url] }] }),
      { code: "BAD_REQUEST" },
      `copy, epoch ${String(epoch)}`,
    );
  }
  assert.equal(onDisk(c, 0, a.hash), true);
  assert.deepEqual(await s0.request("store.has", { hashes: [a.hash] }), { have: [a.hash] });
  assert.equal(c.storage[0]!.alive, true);
  assert.equal(fs.existsSync(path.join(c.root, "storage-0", "runner-epoch")), false, "nothing was accepted");
});
