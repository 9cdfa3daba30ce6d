import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import type { FileInfo } from "../src/protocol/directory.js";
import { chunkOnDisk, corruptChunkOnDisk } from "./helpers/chunks-on-disk.js";
import { startCluster, tmpDir, waitFor, type Cluster } from "./helpers/cluster.js";
import { forEachBackend } from "./helpers/backends.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

async function stat(c: Cluster, remote: string): Promise<FileInfo> {
  const r = await c.client(["stat", "--json", remote]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as FileInfo;
}

function corrupt(c: Cluster, index: number, hash: string): void {
  corruptChunkOnDisk(path.join(c.root, `storage-${index}`), hash);
}

/** Every copy of `hash` on the storage nodes' disks, and whether each still matches its name. */
function copiesOnDisk(c: Cluster, hash: string): boolean[] {
  const found: boolean[] = [];
  c.storage.forEach((_, i) => {
    const copy = chunkOnDisk(path.join(c.root, `storage-${i}`), hash);
    if (copy) found.push(sha(copy.data) === hash);
  });
  return found;
}

forEachBackend((metadata) => {
  test("chunks of a dead node are copied again until every chunk has two live replicas", async (t) => {
    const c = await startCluster(t, { metadata, storage: 4, deadAfter: 2, directoryArgs: ["--chunk-size", "65536"] });
    const work = tmpDir(t);
    const data = randomBytes(20 * 65536);
    fs.writeFileSync(path.join(work, "f"), data);
    assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
    const before = await stat(c, "/f");
    // The node holding the most chunks of the file.
    const counts = new Map<string, number>();
    for (const ch of before.chunks) for (const r of ch.replicas) counts.set(r.url, (counts.get(r.url) ?? 0) + 1);
    const victimUrl = [...counts].sort((a, b) => b[1] - a[1])[0]![0];
    const victim = c.storage.findIndex((p) => p.url === victimUrl);
    await c.storage[victim]!.kill("SIGKILL");

    const healed = await waitFor(async () => {
      const s = await c.status();
      const info = await stat(c, "/f");
      const ok = s.underReplicated === 0 && info.chunks.every((ch) => ch.replicas.length >= 2 && !ch.replicas.some((r) => r.url === victimUrl));
      return ok ? info : undefined;
    }, "re-replication", 40_000, 500);
    for (const ch of healed.chunks) assert.equal(new Set(ch.replicas.map((r) => r.node)).size, 2);
    const r = await c.client(["read", "/f", "out"], { cwd: work, cache: path.join(work, "cold") });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha(fs.readFileSync(path.join(work, "out"))), sha(data));
  });

  test("a read that finds only a corrupt replica fails clearly, reports it, and the chunk is repaired", async (t) => {
    const c = await startCluster(t, { metadata, storage: 3, deadAfter: 2, storageArgs: () => ["--scrub-interval", "0"] });
    const work = tmpDir(t);
    const data = randomBytes(100_000);
    fs.writeFileSync(path.join(work, "f"), data);
    assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
    const info = await stat(c, "/f");
    const hash = info.chunks[0]!.hash;
    const [a, b] = info.chunks[0]!.replicas.map((r) => c.storage.findIndex((p) => p.url === r.url)) as [number, number];
    corrupt(c, a, hash);
    await c.storage[b]!.kill("SIGKILL");

    const bad = await c.client(["read", "/f", "out"], { cwd: work, cache: path.join(work, "cold1") });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /corrupt/);
    assert.ok(!fs.existsSync(path.join(work, "out")), "no partial file left behind");
    await waitFor(async () => (await stat(c, "/f")).chunks[0]!.replicas.length === 0, "bad replica delisted");

    await c.startStorage(b);
    await waitFor(async () => {
      const reps = (await stat(c, "/f")).chunks[0]!.replicas;
      return reps.length === 2 && copiesOnDisk(c, hash).filter(Boolean).length >= 2;
    }, "chunk back on two good replicas", 40_000, 300);
    const good = await c.client(["read", "/f", "out"], { cwd: work, cache: path.join(work, "cold2") });
    assert.equal(good.code, 0, good.stderr);
    assert.equal(sha(fs.readFileSync(path.join(work, "out"))), sha(data));
  });

  test("the scrubber finds a corrupt chunk on disk, drops it, and the chunk is copied again", async (t) => {
    const c = await startCluster(t, { metadata, storage: 3, deadAfter: 2, storageArgs: () => ["--scrub-interval", "1"] });
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "f"), randomBytes(100_000));
    assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
    const first = (await stat(c, "/f")).chunks[0]!;
    const hash = first.hash;
    const a = c.storage.findIndex((p) => p.url === first.replicas[0]!.url);
    corrupt(c, a, hash);
    assert.ok(copiesOnDisk(c, hash).includes(false));
    await waitFor(async () => {
      const copies = copiesOnDisk(c, hash);
      const reps = (await stat(c, "/f")).chunks[0]!.replicas;
      return !copies.includes(false) && copies.length >= 2 && reps.length === 2;
    }, "corrupt copy replaced by a good one", 40_000, 300);
  });

  test("a directory restart copies nothing: its nodes get their dead-after period to reconnect", async (t) => {
    const c = await startCluster(t, { metadata, storage: 3, deadAfter: 5, directoryArgs: ["--chunk-size", "65536"] });
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "f"), randomBytes(8 * 65536));
    assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
    const port = Number(new URL(c.dirUrl).port);
    await c.directory.kill("SIGKILL");
    await c.startDirectory(port);
    await c.waitUp(3);
    // Long enough for the scans that the nodes' returns start (and the periodic one) to have run.
    await waitFor(async () => (await c.status()).scannedAt !== null, "a scan after the restart");
    assert.doesNotMatch(c.directory.stderr, /repair copy/, "no chunk was copied because of the restart");
    assert.equal((await c.status()).underReplicated, 0);
  });
});
