import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { initCerts, issueCert, loadCerts } from "../src/certs/index.js";
import type { FileInfo } from "../src/protocol/directory.js";
import type { DfsError } from "../src/protocol/errors.js";
import { connect } from "../src/transport/connect.js";
import { logger } from "../src/log.js";
import { SMALL_CHUNK_MAX } from "../src/roles/storage/smalllog-format.js";
import { Cluster, startCluster, tmpDir, waitFor } from "./helpers/cluster.js";
import { forEachBackend } from "./helpers/backends.js";

async function stat(c: Cluster, remote: string): Promise<FileInfo> {
  const r = await c.client(["stat", "--json", remote]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as FileInfo;
}

forEachBackend((metadata) => {
  test("a storage certificate cannot take over another node's id, and per-node certificates bind it further", async (t) => {
    const c = new Cluster(t, { metadata, storage: 2, storageArgs: (i) => ["--name", `s${i}`] });
    await initCerts({ dir: c.certs });
    for (const i of [0, 1, 2]) await issueCert({ dir: c.certs, role: "storage", name: `s${i}` });
    await c.startDirectory();
    await Promise.all([c.startLock(), c.startStorage(0), c.startStorage(1)]);
    await c.waitUp(2);
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "f"), randomBytes(100_000));
    assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
    const victim = fs.readFileSync(path.join(c.root, "storage-0", "node-id"), "utf8").trim();
    const body = { kind: "storage", id: victim, url: "wss://127.0.0.1:1", secret: randomBytes(32).toString("hex") };
    const refused = (e: DfsError) => {
      assert.equal(e.code, "FORBIDDEN");
      assert.match(e.message, new RegExp(`node id ${victim}`));
      return true;
    };
    // The shared role certificate...
    const shared = await connect(c.dirUrl, { tls: loadCerts(c.certs, "storage"), log: logger("intruder") });
    t.after(() => shared.close());
    await assert.rejects(shared.request("dir.register", body), refused);
    // ...and another node's own certificate, even with the victim's data folder secret.
    const secret = fs.readFileSync(path.join(c.root, "storage-0", "node-secret"), "utf8").trim();
    const other = await connect(c.dirUrl, { tls: loadCerts(c.certs, "s2"), log: logger("intruder") });
    t.after(() => other.close());
    await assert.rejects(other.request("dir.register", { ...body, secret }), refused);
    const s = await c.status();
    const node = s.nodes.find((n) => n.id === victim)!;
    assert.equal(node.state, "up", "the real node keeps its link");
    assert.notEqual(node.url, "wss://127.0.0.1:1");
    assert.ok((await stat(c, "/f")).chunks.every((ch) => ch.replicas.length === 2), "its replicas are still listed");
  });

  test("a client's report of a bad replica is checked with the node: a good copy stays, a missing one is repaired", async (t) => {
    const c = await startCluster(t, { metadata, storage: 3, deadAfter: 2, storageArgs: () => ["--scrub-interval", "0"] });
    const work = tmpDir(t);
    // Larger than the nodes' log takes, so that the chunk is a file of its own, which the test can remove under a running node.
    fs.writeFileSync(path.join(work, "f"), randomBytes(SMALL_CHUNK_MAX + 1));
    assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);
    const before = await stat(c, "/f");
    const { hash, replicas } = before.chunks[0]!;
    const raw = await connect(c.dirUrl, { tls: loadCerts(c.certs, "client"), log: logger("raw") });
    t.after(() => raw.close());

    await raw.request("dir.badReplica", { hash, node: replicas[0]!.node, reason: "says who" });
    // Looked up at once on the same connection: before any repair could have copied it back.
    const now = await raw.request<FileInfo>("dir.lookup", { path: "/f" });
    assert.deepEqual(now.chunks[0]!.replicas.map((r) => r.node).sort(), replicas.map((r) => r.node).sort(), "a good copy is not delisted");

    const holder = c.storage.findIndex((p) => p.url === replicas[1]!.url);
    fs.rmSync(path.join(c.root, `storage-${holder}`, "chunks", hash.slice(0, 2), hash));
    await raw.request("dir.badReplica", { hash, node: replicas[1]!.node, reason: "missing on read" });
    await waitFor(async () => {
      const r = (await stat(c, "/f")).chunks[0]!.replicas;
      return r.length === 2 && !r.some((x) => x.node === replicas[1]!.node && !fs.existsSync(path.join(c.root, `storage-${holder}`, "chunks", hash.slice(0, 2), hash)));
    }, "the missing copy delisted and copied again");
  });
});
