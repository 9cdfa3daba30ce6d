import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import type { FileInfo } from "../src/protocol/directory.js";
import { forEachBackend } from "./helpers/backends.js";
import { holdsChunk } from "./helpers/chunks-on-disk.js";
import { startCluster, tmpDir, waitFor, type Cluster } from "./helpers/cluster.js";

function onDisk(c: Cluster, hash: string): number {
  return c.storage.filter((_, i) => holdsChunk(path.join(c.root, `storage-${i}`), hash)).length;
}

async function chunksOf(c: Cluster, remote: string): Promise<string[]> {
  const r = await c.client(["stat", "--json", remote]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as FileInfo).chunks.map((x) => x.hash);
}

forEachBackend((metadata) => {
  test("chunks no file uses any more are deleted after the grace period; shared and live chunks stay", async (t) => {
    const c = await startCluster(t, { metadata, storage: 3, directoryArgs: ["--orphan-grace", "1", "--chunk-size", "65536"] });
    const work = tmpDir(t);
    const shared = randomBytes(65536);
    const a = Buffer.concat([shared, randomBytes(65536)]);
    const b = Buffer.concat([shared, randomBytes(65536)]);
    fs.writeFileSync(path.join(work, "a"), a);
    fs.writeFileSync(path.join(work, "b"), b);
    assert.equal((await c.client(["write", "/a", "a"], { cwd: work })).code, 0);
    assert.equal((await c.client(["write", "/b", "b"], { cwd: work })).code, 0);
    const [sharedHash, onlyA] = await chunksOf(c, "/a");
    const [, onlyB] = await chunksOf(c, "/b");
    assert.equal(onDisk(c, onlyA!), 2);

    assert.equal((await c.client(["rm", "/a"])).code, 0);
    await waitFor(() => onDisk(c, onlyA!) === 0, "the chunk only /a used is deleted from every node", 30_000, 200);
    assert.equal(onDisk(c, sharedHash!), 2, "the chunk /b shares stays");
    assert.equal(onDisk(c, onlyB!), 2);
    const r = await c.client(["read", "/b", "b.out"], { cwd: work, cache: path.join(work, "cold") });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(fs.readFileSync(path.join(work, "b.out")), b);
    assert.equal((await c.status()).chunks, 2);
  });
});
