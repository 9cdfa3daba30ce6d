import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { initCerts, loadCerts } from "../src/certs/index.js";
import type { FileInfo } from "../src/protocol/directory.js";
import type { DfsError } from "../src/protocol/errors.js";
import { DfsClient } from "../src/roles/client.js";
import { connect } from "../src/transport/connect.js";
import { logger } from "../src/log.js";
import { holdsChunk } from "./helpers/chunks-on-disk.js";
import { Cluster, tmpDir, waitFor } from "./helpers/cluster.js";
import { forEachBackend, type Backend } from "./helpers/backends.js";
import { HoldingProxy } from "./helpers/proxy.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const CHUNK = 65536;

function onDisk(c: Cluster, hash: string): number {
  return c.storage.filter((_, i) => holdsChunk(path.join(c.root, `storage-${i}`), hash)).length;
}

/** Two storage nodes (so every placement picks both) whose links to the directory pass through holding proxies. */
async function proxiedCluster(t: TestContext, metadata: Backend): Promise<{ c: Cluster; proxies: HoldingProxy[] }> {
  const proxies: HoldingProxy[] = [];
  const c = new Cluster(t, {
    metadata, storage: 2, directoryArgs: ["--orphan-grace", "1", "--chunk-size", String(CHUNK)],
    storageArgs: (i) => ["--directory", proxies[i]!.url],
  });
  await initCerts({ dir: c.certs });
  await c.startDirectory();
  for (let i = 0; i < 2; i++) {
    proxies.push(await HoldingProxy.start(t, { upstream: c.dirUrl, serverTls: loadCerts(c.certs, "directory"), clientTls: loadCerts(c.certs, "storage") }));
  }
  await Promise.all([c.startLock(), c.startStorage(0), c.startStorage(1)]);
  await c.waitUp(2);
  return { c, proxies };
}

forEachBackend((metadata) => {
  test("a delete ordered before the same bytes are written again never removes them", async (t) => {
    const { c, proxies } = await proxiedCluster(t, metadata);
    const work = tmpDir(t);
    const x = randomBytes(CHUNK);
    fs.writeFileSync(path.join(work, "x"), x);
    assert.equal((await c.client(["write", "/a", "x"], { cwd: work })).code, 0);
    const hash = sha(x);
    assert.equal(onDisk(c, hash), 2);

    // The collector's delete orders to both nodes are held in flight...
    for (const p of proxies) p.hold((dir, type) => dir === "down" && type === "store.delete");
    assert.equal((await c.client(["rm", "/a"])).code, 0);
    await waitFor(() => proxies.every((p) => p.heldTypes.includes("store.delete")), "delete orders for the unused chunk");

    // ...while the same bytes are written again: both nodes still hold them, so their puts find them there.
    const w = await c.client(["write", "/b", "x"], { cwd: work });
    assert.equal(w.code, 0, w.stderr);
    for (const p of proxies) p.release();
    // Either outcome shows that the late deletes were handled: refused (kept), or carried out (gone).
    await waitFor(() => onDisk(c, hash) < 2 || c.storage.every((s) => /deletes refused/.test(s.stderr)), "the late deletes handled");

    assert.equal(onDisk(c, hash), 2, "both copies of the rewritten chunk are still on disk");
    const r = await c.client(["read", "/b", "b.out"], { cwd: work, cache: path.join(work, "cold") });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(fs.readFileSync(path.join(work, "b.out")), x);
  });

  test("a commit naming a chunk collected since is refused with a clear error, and writing again stores it again", async (t) => {
    const { c } = await proxiedCluster(t, metadata);
    const work = tmpDir(t);
    const x = randomBytes(CHUNK);
    fs.writeFileSync(path.join(work, "x"), x);
    assert.equal((await c.client(["write", "/a", "x"], { cwd: work })).code, 0);
    const info = JSON.parse((await c.client(["stat", "--json", "/a"])).stdout) as FileInfo;
    assert.equal((await c.client(["rm", "/a"])).code, 0);
    await waitFor(() => onDisk(c, sha(x)) === 0, "the unused chunk collected from both nodes", 30_000);

    const raw = await connect(c.dirUrl, { tls: loadCerts(c.certs, "client"), log: logger("raw") });
    t.after(() => raw.close());
    const file = { path: "/c", size: info.size, sha256: info.sha256, chunks: info.chunks.map((ch) => ch.hash) };
    await assert.rejects(raw.request("dir.commit", { files: [file] }), (e: DfsError) => {
      assert.equal(e.code, "CONFLICT");
      assert.equal(e.details?.reason, "chunks-gone");
      assert.match(e.message, /no longer stored.*write the file again/);
      return true;
    });
    assert.equal((await c.client(["stat", "/c"])).code, 1, "nothing was committed");

    const w = await c.client(["write", "/c", "x"], { cwd: work });
    assert.equal(w.code, 0, w.stderr);
    assert.equal(onDisk(c, sha(x)), 2);
    const r = await c.client(["read", "/c", "c.out"], { cwd: work, cache: path.join(work, "cold") });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(fs.readFileSync(path.join(work, "c.out")), x);
  });

  test("a write whose chunks are collected between upload and commit is written again by the client", async (t) => {
    const { c } = await proxiedCluster(t, metadata);
    const work = tmpDir(t);
    // The client reaches the directory through a proxy that holds its first commit past the grace period.
    const viaProxy = await HoldingProxy.start(t, { upstream: c.dirUrl, serverTls: loadCerts(c.certs, "directory"), clientTls: loadCerts(c.certs, "client") });
    viaProxy.hold((dir, type) => dir === "up" && type === "dir.commit");
    const client = new DfsClient({ directoryUrls: [viaProxy.url], tls: loadCerts(c.certs, "client"), cacheDir: path.join(work, "cache"), log: logger("client") });
    t.after(() => client.close());
    const x = randomBytes(2 * CHUNK);
    let opened = 0;
    const writing = client.write("/w", () => {
      opened++;
      return [x];
    });
    await waitFor(() => viaProxy.heldTypes.length === 1, "the first commit held");
    await waitFor(() => onDisk(c, sha(x.subarray(0, CHUNK))) === 0, "the uploaded chunks collected meanwhile", 30_000);
    viaProxy.release();
    const r = await writing;
    assert.equal(r.version, 1);
    assert.equal(opened, 2, "the source was read twice: once per attempt");
    const out: Buffer[] = [];
    await client.read("/w", async (d) => void out.push(d));
    assert.deepEqual(Buffer.concat(out), x);
  });
});
