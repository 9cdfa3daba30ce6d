import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import type { FileInfo } from "../src/protocol/directory.js";
import { holdsChunk } from "./helpers/chunks-on-disk.js";
import { Cluster, spawnDfs, startCluster, tmpDir, waitFor } from "./helpers/cluster.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const chunkFile = (c: Cluster, i: number, hash: string) => path.join(c.root, `storage-${i}`, "chunks", hash.slice(0, 2), hash);
const holds = (c: Cluster, i: number, hash: string) => holdsChunk(path.join(c.root, `storage-${i}`), hash);

async function stat(c: Cluster, remote: string): Promise<FileInfo> {
  const r = await c.client(["stat", "--json", remote]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as FileInfo;
}

test("chunks a node holds that the directory never knew are deleted after the grace period; known ones stay", async (t) => {
  const c = await startCluster(t, { storage: 2, directoryArgs: ["--orphan-grace", "1"] });
  const work = tmpDir(t);
  fs.writeFileSync(path.join(work, "f"), randomBytes(30_000));
  assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
  const known = (await stat(c, "/f")).chunks[0]!.hash;
  await c.storage[0]!.kill("SIGKILL");
  // What an upload whose commit never came leaves behind.
  const data = randomBytes(1000);
  const leftover = sha(data);
  fs.mkdirSync(path.dirname(chunkFile(c, 0, leftover)), { recursive: true });
  fs.writeFileSync(chunkFile(c, 0, leftover), data);
  await c.startStorage(0);
  await waitFor(() => !fs.existsSync(chunkFile(c, 0, leftover)), "the leftover chunk deleted", 30_000);
  assert.ok(holds(c, 0, known), "a chunk of a file stays");
  const r = await c.client(["cat", "/f"]);
  assert.equal(r.code, 0, r.stderr);
});

test("copies beyond the replication factor, left when a dead node comes back, are trimmed", async (t) => {
  const c = await startCluster(t, { storage: 3, deadAfter: 2, directoryArgs: ["--chunk-size", "65536"] });
  const work = tmpDir(t);
  fs.writeFileSync(path.join(work, "f"), randomBytes(6 * 65536));
  assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
  const hashes = (await stat(c, "/f")).chunks.map((ch) => ch.hash);
  const copies = () => hashes.map((h) => c.storage.filter((_, i) => holds(c, i, h)).length);
  const victim = c.storage.findIndex((_, i) => hashes.some((h) => holds(c, i, h)));
  await c.storage[victim]!.kill("SIGKILL");
  await waitFor(async () => {
    const s = await c.status();
    const info = await stat(c, "/f");
    return s.underReplicated === 0 && info.chunks.every((ch) => ch.replicas.length === 2);
  }, "re-replication while the node is dead", 40_000);
  assert.ok(copies().some((n) => n === 3), "the dead node's disk still holds its copies");
  await c.startStorage(victim);
  await waitFor(() => copies().every((n) => n === 2), "back to two copies of every chunk", 60_000);
  const info = await stat(c, "/f");
  assert.ok(info.chunks.every((ch) => ch.replicas.length === 2));
  const r = await c.client(["read", "/f", "out"], { cwd: work, cache: path.join(work, "cold") });
  assert.equal(r.code, 0, r.stderr);
});

test("a storage node of another cluster is refused with a clear error, and its data is left alone", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  fs.writeFileSync(path.join(work, "f"), randomBytes(30_000));
  assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
  const hash = (await stat(c, "/f")).chunks[0]!.hash;
  const holder = c.storage.findIndex((_, i) => holds(c, i, hash));
  const clusterId = fs.readFileSync(path.join(c.root, `storage-${holder}`, "cluster-id"), "utf8").trim();
  assert.equal((await c.status()).directory.clusterId, clusterId);

  // A directory started on an empty folder is a new cluster: it must never get to delete the old one's chunks.
  const other = spawnDfs(t, ["--role", "directory", "--port", "0", "--data", path.join(c.root, "empty-directory"), "--certs", c.certs, "--orphan-grace", "1"]);
  const otherUrl = await other.listening();
  await c.storage[holder]!.kill("SIGKILL");
  const node = spawnDfs(t, ["--role", "storage", "--port", "0", "--data", path.join(c.root, `storage-${holder}`), "--certs", c.certs, "--directory", otherUrl]);
  await node.listening();
  await waitFor(() => /belongs to cluster .* but this directory serves cluster/.test(node.stderr), "the refusal in the node's log");
  const s = JSON.parse((await c.client(["status", "--json"])).stdout);
  assert.ok(s.nodes.every((n: { url: string }) => n.url !== node.url));
  await new Promise((r) => setTimeout(r, 2500)); // two grace periods of the other directory
  assert.ok(holds(c, holder, hash), "the node's chunks are untouched");
});
