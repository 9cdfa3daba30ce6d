import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { loadCerts } from "../src/certs/index.js";
import type { PlaceReply } from "../src/protocol/directory.js";
import type { DfsError } from "../src/protocol/errors.js";
import { hasIntactChunk } from "./helpers/chunks-on-disk.js";
import { PIECE_SIZE, STREAM_IDLE_MS, transferTimeoutMs, type PutReply } from "../src/protocol/storage.js";
import { DfsClient } from "../src/roles/client.js";
import type { Channel } from "../src/transport/channel.js";
import { connect } from "../src/transport/connect.js";
import { logger } from "../src/log.js";
import { startCluster, tmpDir, waitFor, type Cluster } from "./helpers/cluster.js";

/** Four pieces to a chunk: small enough to be quick, large enough to be streamed. */
const CHUNK = 4 * PIECE_SIZE;
const log = logger("test");
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const code = (p: Promise<unknown>) => p.then(() => "ok", (e: DfsError) => e.code);

const storageDir = (c: Cluster, i: number) => path.join(c.root, `storage-${i}`, "chunks");

/** Temp files of a storage node (chunks being received) with their sizes. */
function temps(c: Cluster, i: number): number[] {
  const dir = path.join(storageDir(c, i), "tmp");
  const out: number[] = [];
  for (const name of fs.readdirSync(dir)) {
    try {
      out.push(fs.statSync(path.join(dir, name)).size);
    } catch {
      // Renamed into place or removed between the listing and the stat.
    }
  }
  return out;
}

/** Every chunk file a node holds, checked against its name: a half-written chunk must never be one of them. */
function chunksOn(c: Cluster, i: number): Set<string> {
  const out = new Set<string>();
  for (const sub of fs.readdirSync(storageDir(c, i))) {
    if (!/^[0-9a-f]{2}$/.test(sub)) continue;
    for (const name of fs.readdirSync(path.join(storageDir(c, i), sub))) {
      assert.equal(sha(fs.readFileSync(path.join(storageDir(c, i), sub, name))), name, `chunk file ${name} on node ${i} holds what its name says`);
      out.add(name);
    }
  }
  return out;
}

function newClient(t: TestContext, c: Cluster): DfsClient {
  const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(tmpDir(t), "cache"), log });
  t.after(() => client.close());
  return client;
}

async function readBack(client: DfsClient, remote: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  await client.read(remote, async (d) => void parts.push(d));
  return Buffer.concat(parts);
}

/** A connection of our own to a node, speaking the stream messages directly. */
async function raw(t: TestContext, c: Cluster, url: string): Promise<Channel> {
  const conn = await connect(url, { tls: loadCerts(c.certs, "client"), log });
  t.after(() => conn.close());
  return conn;
}

/** Sends pieces [from, to) of `data` on stream `stream`, one after the other. */
async function pieces(conn: Channel, stream: number, data: Buffer, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    await conn.request("store.piece", { stream, offset: i * PIECE_SIZE, data: data.subarray(i * PIECE_SIZE, (i + 1) * PIECE_SIZE) });
  }
}

test("a file of several chunks is streamed in pieces down the chain, reads back byte-exact, and both replicas hold every chunk", async (t) => {
  // Chunks of three pieces and a short one, and a last chunk small enough to go in one put.
  const chunk = 3 * PIECE_SIZE + 1000;
  const c = await startCluster(t, { storage: 2, replicas: 2, directoryArgs: ["--chunk-size", String(chunk)] });
  const client = newClient(t, c);
  const data = randomBytes(5 * chunk + 1000);
  await client.write("/big.bin", [data.subarray(0, 2 * chunk + 7), data.subarray(2 * chunk + 7)]);
  const info = await client.stat("/big.bin");
  assert.equal(info.chunks.length, 6);
  assert.ok(info.chunks.slice(0, 5).every((ch) => ch.size === chunk) && info.chunks[5]!.size === 1000);
  assert.ok(info.chunks.every((ch) => ch.replicas.length === 2), "two replicas recorded for every chunk");
  assert.ok((await readBack(client, "/big.bin")).equals(data), "read back byte-exact");
  assert.ok((await readBack(newClient(t, c), "/big.bin")).equals(data), "read back byte-exact by a client with an empty cache");
  for (const i of [0, 1]) {
    // The short last chunk lives in the node's small-chunk log, the others in files of their own.
    for (const ch of info.chunks) assert.ok(hasIntactChunk(path.join(c.root, `storage-${i}`), ch.hash), `node ${i} holds chunk ${ch.hash.slice(0, 12)}`);
    assert.deepEqual(temps(c, i), [], `no temp file left on node ${i}`);
  }
});

test("a node whose next node is killed mid-stream completes its own copy and answers without it", async (t) => {
  const c = await startCluster(t, { storage: 3, replicas: 2, deadAfter: 2 });
  const data = randomBytes(4 * PIECE_SIZE);
  const hash = sha(data);
  const dir = await raw(t, c, c.dirUrl);
  const place = await dir.request<PlaceReply>("dir.place", { chunks: [{ hash, size: data.length }] });
  const [first, next] = place.chunks[0]!.targets.map((r) => c.storage.findIndex((p) => p.url === r.url));
  assert.ok(first! >= 0 && next! >= 0 && first !== next);
  const conn = await raw(t, c, c.storage[first!]!.url);
  await conn.request("store.open", { stream: 1, hash, gen: place.gen, size: data.length, chain: [c.storage[next!]!.url] });
  // A piece is answered once the rest of the chain wrote it: half the chunk is now on the next node's disk.
  await pieces(conn, 1, data, 0, 2);
  assert.ok(temps(c, next!).some((n) => n >= 2 * PIECE_SIZE), "the next node holds half the chunk in a temp file");
  await c.storage[next!]!.kill("SIGKILL");
  await pieces(conn, 1, data, 2, 4);
  const reply = await conn.request<PutReply>("store.close", { stream: 1 });
  assert.deepEqual(reply.stored, [c.storage[first!]!.url], "only the first node holds the chunk");
  assert.ok(chunksOn(c, first!).has(hash));
  assert.deepEqual(temps(c, first!), []);
  assert.ok(!chunksOn(c, next!).has(hash), "the killed node never made its half a chunk");
});

test("a node whose next node freezes mid-stream gives up on it within seconds and answers without it", async (t) => {
  const c = await startCluster(t, { storage: 2, replicas: 2, deadAfter: 2 });
  const data = randomBytes(4 * PIECE_SIZE);
  const hash = sha(data);
  const conn = await raw(t, c, c.storage[0]!.url);
  await conn.request("store.open", { stream: 1, hash, gen: 0, size: data.length, chain: [c.storage[1]!.url] });
  await pieces(conn, 1, data, 0, 1);
  c.storage[1]!.child.kill("SIGSTOP");
  const frozenAt = Date.now();
  await pieces(conn, 1, data, 1, 4);
  const reply = await conn.request<PutReply>("store.close", { stream: 1 });
  const took = Date.now() - frozenAt;
  t.diagnostic(`answered ${took} ms after the next node froze`);
  assert.deepEqual(reply.stored, [c.storage[0]!.url]);
  assert.ok(took < transferTimeoutMs(PIECE_SIZE, 1), `gave up on the frozen node in ${took} ms`);
  assert.ok(chunksOn(c, 0).has(hash));
});

test("a node whose sender is killed mid-stream abandons the stream: temp file gone, nothing stored", async (t) => {
  const c = await startCluster(t, { storage: 3, replicas: 2, deadAfter: 2 });
  const data = randomBytes(4 * PIECE_SIZE);
  const hash = sha(data);
  const [first, next] = [0, 1];
  const conn = await raw(t, c, c.storage[first]!.url);
  await conn.request("store.open", { stream: 1, hash, gen: 0, size: data.length, chain: [c.storage[next]!.url] });
  await pieces(conn, 1, data, 0, 2);
  assert.ok(temps(c, next).some((n) => n >= 2 * PIECE_SIZE));
  await c.storage[first]!.kill("SIGKILL");
  assert.equal(await code(pieces(conn, 1, data, 2, 4)), "UNAVAILABLE", "the writer learns at once that the first node is gone");
  await waitFor(() => temps(c, next).length === 0, "the next node dropped its temp file", 10_000, 20);
  assert.ok(!chunksOn(c, next).has(hash));
});

/**
 * Kills storage node `i` while it is receiving a chunk: it is stopped as soon as a temp file with bytes shows,
 * and killed only if one is still there once it cannot move on (a stream under way), else let go and watched again.
 */
async function killMidStream(c: Cluster, i: number, writing: Promise<unknown>): Promise<number> {
  let done = false;
  void writing.finally(() => (done = true));
  const victim = c.storage[i]!;
  for (;;) {
    if (done) throw new Error("the write ended before the node was caught receiving a chunk");
    if (temps(c, i).some((n) => n > 0)) {
      victim.child.kill("SIGSTOP");
      const partial = temps(c, i).filter((n) => n > 0);
      if (partial.length > 0) {
        await victim.kill("SIGKILL");
        return Math.max(...partial);
      }
      victim.child.kill("SIGCONT");
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

for (const replicas of [2, 1]) {
  const role = replicas === 1 ? "the only (first) node of its chains" : "first or next in its chains";
  test(`a storage node killed with SIGKILL mid-stream (${role}): the write completes elsewhere, nothing is lost or half-visible`, async (t) => {
    const c = await startCluster(t, { storage: 3, replicas, deadAfter: 2, directoryArgs: ["--chunk-size", String(CHUNK)] });
    const client = newClient(t, c);
    const before = randomBytes(3 * CHUNK);
    await client.write("/before.bin", [before]);
    const data = randomBytes(20 * CHUNK);
    const file = path.join(tmpDir(t), "data.bin");
    fs.writeFileSync(file, data);
    // The writer runs in a process of its own, so that nothing here slows it while this one watches the disk.
    const writing = c.client(["write", "/during.bin", file]);
    const partial = await killMidStream(c, 1, writing);
    t.diagnostic(`killed node 1 holding a partial chunk of ${partial} bytes`);
    const r = await writing;
    assert.equal(r.code, 0, `the write completed on the other nodes: ${r.stderr}`);
    for (const i of [0, 2]) await waitFor(() => temps(c, i).length === 0, `no temp file left on surviving node ${i}`, 15_000, 50);
    // Back up, the killed node drops its partial chunk too; what it holds is whole.
    await c.startStorage(1);
    await c.waitUp(3);
    assert.deepEqual(temps(c, 1), []);
    for (const i of [0, 1, 2]) chunksOn(c, i);
    const reader = newClient(t, c);
    assert.ok((await readBack(reader, "/during.bin")).equals(data), "the acknowledged write reads back byte-exact");
    assert.ok((await readBack(reader, "/before.bin")).equals(before), "an earlier write still reads back");
    const info = await reader.stat("/during.bin");
    assert.ok(info.chunks.every((ch) => ch.replicas.length >= replicas), "every chunk has its copies");
  });
}

test("a client that disconnects mid-stream leaves no temp file and no claimed room behind", async (t) => {
  const capacity = 3 * CHUNK;
  const c = await startCluster(t, { storage: 1, replicas: 1, storageArgs: () => ["--capacity", String(capacity)] });
  const url = c.storage[0]!.url;
  const a = randomBytes(2 * CHUNK);
  const conn = await raw(t, c, url);
  await conn.request("store.open", { stream: 1, hash: sha(a), gen: 0, size: a.length, chain: [] });
  await pieces(conn, 1, a, 0, 1);
  assert.deepEqual(temps(c, 0), [PIECE_SIZE]);
  // The open claimed room for the whole chunk: a second one no longer fits.
  assert.equal(await code(conn.request("store.open", { stream: 2, hash: sha(a), gen: 0, size: a.length, chain: [] })), "NO_SPACE");
  conn.terminate();
  await waitFor(() => temps(c, 0).length === 0, "the temp file removed", 10_000, 20);
  // The room came back: the same chunk fits again, in full.
  const again = await raw(t, c, url);
  await again.request("store.open", { stream: 1, hash: sha(a), gen: 0, size: a.length, chain: [] });
  await pieces(again, 1, a, 0, 8);
  assert.deepEqual((await again.request<PutReply>("store.close", { stream: 1 })).stored, [url]);
  assert.ok(chunksOn(c, 0).has(sha(a)));
});

test("a stream whose sender goes silent is abandoned after the idle time", async (t) => {
  const c = await startCluster(t, { storage: 1, replicas: 1 });
  const data = randomBytes(2 * PIECE_SIZE);
  const conn = await raw(t, c, c.storage[0]!.url);
  await conn.request("store.open", { stream: 1, hash: sha(data), gen: 0, size: data.length, chain: [] });
  await pieces(conn, 1, data, 0, 1);
  const silentFrom = Date.now();
  await waitFor(() => temps(c, 0).length === 0, "the silent stream dropped", STREAM_IDLE_MS + 10_000, 50);
  assert.ok(Date.now() - silentFrom >= STREAM_IDLE_MS - 100, "not before the idle time");
  assert.equal(await code(pieces(conn, 1, data, 1, 2)), "BAD_REQUEST", "the stream is gone");
  assert.equal(conn.closed, false, "the connection itself is kept");
});

test("malformed stream messages get BAD_REQUEST, a wrong hash CORRUPT, and the node keeps serving", async (t) => {
  const c = await startCluster(t, { storage: 1, replicas: 1 });
  const url = c.storage[0]!.url;
  const conn = await raw(t, c, url);
  const data = randomBytes(3 * PIECE_SIZE);
  const hash = sha(data);
  const open = (stream: number, extra: Record<string, unknown> = {}) =>
    conn.request("store.open", { stream, hash, gen: 0, size: data.length, chain: [], ...extra });
  const piece = (stream: number, offset: number, bytes: Uint8Array) => code(conn.request("store.piece", { stream, offset, data: bytes }));
  const bad = async (what: string, p: Promise<string>) => assert.equal(await p, "BAD_REQUEST", what);

  await bad("a piece of a stream never opened", piece(99, 0, data.subarray(0, 10)));
  await bad("a close of a stream never opened", code(conn.request("store.close", { stream: 99 })));
  await bad("a body of the wrong shape", code(conn.request("store.piece", { stream: "x", offset: -1, data: "text" })));
  await bad("an open of size 0", code(open(1, { size: 0 })));
  await bad("an open with a bad hash", code(open(1, { hash: "../../etc" })));

  await open(1);
  await bad("a second open of the same stream", code(open(1)));
  await bad("a piece larger than a piece may be", piece(1, 0, Buffer.alloc(PIECE_SIZE + 1)));
  await bad("an empty piece", piece(1, 0, Buffer.alloc(0)));
  assert.equal(await piece(1, 0, data.subarray(0, PIECE_SIZE)), "ok");
  await bad("a piece overlapping bytes already received", piece(1, PIECE_SIZE - 10, data.subarray(PIECE_SIZE - 10, PIECE_SIZE + 10)));
  await bad("the stream ended with the bad piece", piece(1, PIECE_SIZE, data.subarray(PIECE_SIZE, 2 * PIECE_SIZE)));

  await open(2);
  await bad("more bytes than the open announced", piece(2, 2 * PIECE_SIZE + 1, data.subarray(0, PIECE_SIZE)));
  await open(3);
  assert.equal(await piece(3, 0, data.subarray(0, PIECE_SIZE)), "ok");
  await bad("a close before every byte came", code(conn.request("store.close", { stream: 3 })));
  await open(4);
  const early = piece(4, 20 * PIECE_SIZE, Buffer.alloc(10));
  await bad("a piece far past the announced size", early);

  await open(7, { size: 2000 });
  const ahead = Array.from({ length: 17 }, (_, k) => piece(7, 100 * (k + 1), Buffer.alloc(10)));
  assert.deepEqual(new Set(await Promise.all(ahead)), new Set(["BAD_REQUEST"]), "too many pieces ahead of a missing one");

  // Pieces that arrive out of order are put back in order.
  await open(5);
  const late = [piece(5, 2 * PIECE_SIZE, data.subarray(2 * PIECE_SIZE)), piece(5, PIECE_SIZE, data.subarray(PIECE_SIZE, 2 * PIECE_SIZE))];
  assert.equal(await piece(5, 0, data.subarray(0, PIECE_SIZE)), "ok");
  assert.deepEqual(await Promise.all(late), ["ok", "ok"]);
  assert.deepEqual((await conn.request<PutReply>("store.close", { stream: 5 })).stored, [url]);

  const wrong = Buffer.from(data);
  wrong[5] ^= 1;
  await open(6);
  await pieces(conn, 6, wrong, 0, 3);
  assert.equal(await code(conn.request("store.close", { stream: 6 })), "CORRUPT");

  await waitFor(() => temps(c, 0).length === 0, "no temp file left", 10_000, 20);
  assert.deepEqual([...chunksOn(c, 0)], [hash], "only the good stream stored a chunk");
  assert.equal(conn.closed, false);
  assert.deepEqual(await conn.request("store.has", { hashes: [hash] }), { have: [hash] });
  const status = await c.status();
  assert.ok(status.nodes.every((n) => n.state === "up"), "every node still up");
});
