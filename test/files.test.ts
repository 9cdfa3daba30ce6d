import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import type { FileInfo } from "../src/protocol/directory.js";
import { DfsClient } from "../src/roles/client.js";
import { logger } from "../src/log.js";
import { startCluster, tmpDir, type Cluster } from "./helpers/cluster.js";
import { forEachBackend } from "./helpers/backends.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const MiB = 1024 * 1024;

async function stat(c: Cluster, remote: string): Promise<FileInfo> {
  const r = await c.client(["stat", "--json", remote]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as FileInfo;
}

forEachBackend((metadata) => {
  test("a 50 MiB file and an empty file round-trip, each chunk on two live nodes, and survive a storage node's death", async (t) => {
    const c = await startCluster(t, { metadata, storage: 3 });
    const work = tmpDir(t);
    const big = randomBytes(50 * MiB);
    fs.writeFileSync(path.join(work, "big.bin"), big);
    fs.writeFileSync(path.join(work, "empty"), "");

    let r = await c.client(["write", "/data/big.bin", "big.bin"], { cwd: work });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /wrote \/data\/big.bin v1 \(50 MiB, 13 chunks\)/);
    r = await c.client(["write", "/data/empty"], { cwd: work });
    assert.equal(r.code, 0, r.stderr);

    r = await c.client(["read", "/data/big.bin", "big.out"], { cwd: work });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha(fs.readFileSync(path.join(work, "big.out"))), sha(big));
    r = await c.client(["read", "/data/empty", "empty.out"], { cwd: work });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(path.join(work, "empty.out")).length, 0);

    const info = await stat(c, "/data/big.bin");
    assert.equal(info.size, big.length);
    assert.equal(info.sha256, sha(big));
    const up = new Set((await c.status()).nodes.filter((n) => n.state === "up").map((n) => n.id));
    for (const ch of info.chunks) {
      assert.equal(new Set(ch.replicas.map((x) => x.node)).size, 2, `chunk ${ch.hash} on 2 distinct nodes`);
      assert.ok(ch.replicas.every((x) => up.has(x.node)));
    }
    assert.equal((await stat(c, "/data/empty")).chunks.length, 0);

    // Lose a node; a cold cache forces every chunk over the network, from the surviving replicas.
    await c.storage[0]!.kill("SIGKILL");
    r = await c.client(["read", "/data/big.bin", "after-kill.out"], { cwd: work, cache: path.join(work, "cold-cache") });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /13 fetched, 0 cached/);
    assert.equal(sha(fs.readFileSync(path.join(work, "after-kill.out"))), sha(big));
    r = await c.client(["cat", "/data/empty"], { cache: path.join(work, "cold-cache") });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "");
  });

  test("the cache: an unchanged file fetches no chunk; a rewritten chunk is the only one fetched", async (t) => {
    const c = await startCluster(t, { metadata, storage: 3, directoryArgs: ["--chunk-size", "65536"] });
    const work = tmpDir(t);
    const data = randomBytes(10 * 65536);
    fs.writeFileSync(path.join(work, "f"), data);
    assert.equal((await c.client(["write", "/f", "f"], { cwd: work })).code, 0);

    const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(work, "cache"), log: logger("test") });
    t.after(() => client.close());
    const read = async () => {
      const parts: Buffer[] = [];
      await client.read("/f", async (d) => void parts.push(d));
      return Buffer.concat(parts);
    };
    assert.deepEqual(await read(), data);
    assert.equal(client.stats.chunksFetched, 10);
    assert.deepEqual(await read(), data);
    assert.equal(client.stats.chunksFetched, 10, "second read of an unchanged file fetched nothing");

    // Another client rewrites the fourth chunk only.
    const changed = Buffer.from(data);
    randomBytes(65536).copy(changed, 3 * 65536);
    fs.writeFileSync(path.join(work, "f2"), changed);
    assert.equal((await c.client(["write", "/f", "f2"], { cwd: work })).code, 0);
    assert.deepEqual(await read(), changed);
    assert.equal(client.stats.chunksFetched, 11, "only the changed chunk was fetched");
  });

  test("bad input gets a one-line error and changes nothing", async (t) => {
    const c = await startCluster(t, { metadata, storage: 2 });
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "ok.txt"), "fine");
    assert.equal((await c.client(["write", "/ok.txt", "ok.txt"], { cwd: work })).code, 0);
    const before = (await c.client(["ls"])).stdout;

    const cases: [string[], RegExp][] = [
      [["write", "/x", "missing.txt"], /no such local file: .*missing\.txt/],
      [["read", "/nope"], /no such file: \/nope/],
      [["write", "../escape", "ok.txt"], /may not contain "\.\."/],
      [["write", "/a/../b", "ok.txt"], /may not contain "\.\."/],
      [["write", "/a//b", "ok.txt"], /empty part/],
      [["rm", "/nope"], /no such file: \/nope/],
      [["mv", "/nope", "/other"], /no such file: \/nope/],
      [["stat"], /usage: stat REMOTE/],
      [["launch"], /unknown command "launch"/],
    ];
    for (const [args, re] of cases) {
      const r = await c.client(args, { cwd: work });
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stdout}`);
      assert.match(r.stderr, re, args.join(" "));
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line for ${args.join(" ")}`);
    }
    // A NUL cannot travel in argv; it can in a piped REPL line.
    const repl = await c.client([], { stdin: "write /a\u0000b ok.txt\nls\n", cwd: work });
    assert.match(repl.stderr, /NUL/);
    assert.equal(repl.code, 1);

    assert.equal((await c.client(["ls"])).stdout, before, "the namespace is unchanged");
    assert.equal(fs.readFileSync(path.join(work, "ok.txt"), "utf8"), "fine");
  });

  test("fewer live storage nodes than the replication factor, or full nodes: NOT_ENOUGH_NODES, nothing stored", async (t) => {
    const c = await startCluster(t, { metadata, storage: 2, storageArgs: (i) => (i === 1 ? ["--capacity", "100000"] : []) });
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "big"), randomBytes(2 * MiB));
    let r = await c.client(["write", "/big", "big"], { cwd: work });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /only 1 live storage node with room, 2 needed/);

    await c.storage[0]!.kill("SIGKILL");
    fs.writeFileSync(path.join(work, "small"), "x");
    await c.waitUp(1);
    r = await c.client(["write", "/small", "small"], { cwd: work });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /needed for the replication factor/);
    assert.equal((await c.client(["ls"])).stdout, "");
  });
});
