import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { REPORT_PAGE, type RegisterReply } from "../src/protocol/directory.js";
import { connect } from "../src/transport/connect.js";
import { logger } from "../src/log.js";
import { ChunkStore } from "../src/roles/storage/chunkstore.js";
import { holdsChunk } from "./helpers/chunks-on-disk.js";
import { runDfs, startCluster, tmpDir, waitFor } from "./helpers/cluster.js";

test("a storage node holding a million chunks registers: its report goes in pages", { timeout: 300_000 }, async (t) => {
  const c = await startCluster(t, { storage: 1 });
  const node = await connect(c.dirUrl, { tls: loadCerts(c.certs, "storage"), log: logger("big") });
  t.after(() => node.close());
  const reply = await node.request<RegisterReply>("dir.register", {
    kind: "storage", id: "big-node", url: "wss://127.0.0.1:1", secret: randomBytes(32).toString("hex"), chunks: 1_000_000,
  });
  // A real node keeps beating while it reports; without beats a slow report would leave it suspect.
  const beat = setInterval(() => void node.tell("dir.heartbeat", { free: 1e12, used: 0, chunks: 1_000_000 }).catch(() => {}), reply.heartbeatMs);
  t.after(() => clearInterval(beat));
  const total = 1_000_000;
  for (let sent = 0; sent < total; sent += REPORT_PAGE) {
    const n = Math.min(REPORT_PAGE, total - sent);
    const hashes = randomBytes(32 * n);
    await node.request("dir.report", { report: reply.report, hashes, last: sent + n >= total }, { timeoutMs: 60_000 });
  }
  const s = await c.status();
  const big = s.nodes.find((n) => n.id === "big-node");
  assert.equal(big?.state, "up");
  assert.equal(big?.chunks, 1_000_000);
  // One message of the whole list would not fit in a frame: the directory must refuse what is not a page.
  await assert.rejects(node.request("dir.report", { report: reply.report, hashes: randomBytes(32 * (REPORT_PAGE + 1)), last: true }), { code: "BAD_REQUEST" });
});

test("a real storage node reports more chunks than one page holds, and a copy it lost is noticed and repaired", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  fs.writeFileSync(path.join(work, "f"), randomBytes(50_000));
  assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
  const info = JSON.parse((await c.client(["stat", "--json", "/f"])).stdout);
  const hash: string = info.chunks[0].hash;
  const victim = c.storage.findIndex((p) => p.url === info.chunks[0].replicas[0].url);
  await c.storage[victim]!.kill("SIGKILL");
  // Leftover chunk files: more than two pages' worth.
  const dir = path.join(c.root, `storage-${victim}`, "chunks");
  for (let i = 0; i < 2 * REPORT_PAGE + 10; i++) {
    const data = randomBytes(16);
    const h = createHash("sha256").update(data).digest("hex");
    fs.mkdirSync(path.join(dir, h.slice(0, 2)), { recursive: true });
    fs.writeFileSync(path.join(dir, h.slice(0, 2), h), data);
  }
  // The node lost its copy of /f while down.
  const store = await ChunkStore.open({ dir: path.join(c.root, `storage-${victim}`) });
  assert.equal(await store.delete(hash), true);
  await store.close();
  await c.startStorage(victim);
  await waitFor(async () => {
    const s = await c.status();
    const n = s.nodes.find((x) => x.url === c.storage[victim]!.url);
    return n?.state === "up" && n.chunks >= 2 * REPORT_PAGE + 10;
  }, "the node up with all its chunks counted");
  // Only a directory that dropped the stale replica sees /f under-replicated, and copies it back to the node.
  await waitFor(() => holdsChunk(path.join(c.root, `storage-${victim}`), hash), "the chunk the node lost copied back to it", 30_000);
});

test("a chunk size larger than a message can carry is refused at start", async (t) => {
  const c = await startCluster(t, { storage: 1 });
  const r = await runDfs(t, ["--role", "directory", "--port", "0", "--data", path.join(c.root, "d2"), "--certs", c.certs, "--chunk-size", String(32 * 1024 * 1024)]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--chunk-size 33554432 is larger than .* the largest chunk one message can carry/);
  assert.equal(r.stderr.trim().split("\n").length, 1, "one line");
});
