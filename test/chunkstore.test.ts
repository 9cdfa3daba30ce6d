import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import test, { type TestContext } from "node:test";
import type { Logger } from "../src/log.js";
import { DfsError } from "../src/protocol/errors.js";
import { ChunkStore, isChunkHash, type ChunkStoreInit } from "../src/roles/storage/chunkstore.js";
import { SMALL_CHUNK_MAX } from "../src/roles/storage/smalllog-format.js";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => quiet };

function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dfs-chunkstore-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function openStore(t: TestContext, init: Partial<ChunkStoreInit> & { dir: string }): Promise<ChunkStore> {
  const store = await ChunkStore.open({ log: quiet, ...init });
  t.after(() => store.close());
  return store;
}

function chunk(size = 4096): { hash: string; data: Buffer } {
  const data = randomBytes(size);
  return { hash: createHash("sha256").update(data).digest("hex"), data };
}

function code(c: string) {
  return (err: unknown) => err instanceof DfsError && err.code === c;
}

const fileOf = (dir: string, hash: string) => path.join(dir, "chunks", hash.slice(0, 2), hash);
const tmpFiles = (dir: string) => fs.readdirSync(path.join(dir, "chunks", "tmp"));
/** Chunks of this size get a file each; smaller ones go to the log (see smalllog.test.ts). */
const FILE_CHUNK = SMALL_CHUNK_MAX + 1;

test("put/get round trip; a large chunk's file lands at chunks/ab/<hash>", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir });
  const c = chunk(FILE_CHUNK);
  assert.equal(await store.put(c.hash, c.data), true);
  assert.deepEqual(await store.get(c.hash), c.data);
  assert.deepEqual(await store.get(c.hash, { verify: true }), c.data);
  assert.deepEqual(fs.readFileSync(fileOf(dir, c.hash)), c.data);
  assert.equal(await store.has(c.hash), true);
  assert.deepEqual(await store.list(), [c.hash]);
  assert.deepEqual(store.usage(), { used: FILE_CHUNK, chunks: 1, capacity: null });
  assert.deepEqual(tmpFiles(dir), []);
  await assert.rejects(store.get(chunk().hash), code("NOT_FOUND"));
});

test("wrong hash: CORRUPT, no chunk file and no temp file left", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir });
  const c = chunk();
  const other = chunk();
  await assert.rejects(store.put(other.hash, c.data), code("CORRUPT"));
  assert.equal(fs.existsSync(fileOf(dir, other.hash)), false);
  assert.equal(fs.existsSync(fileOf(dir, c.hash)), false);
  assert.deepEqual(tmpFiles(dir), []);
  assert.deepEqual(store.usage().chunks, 0);
});

test("bad hashes are refused with BAD_REQUEST before touching a path", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir });
  const c = chunk();
  const bad: unknown[] = ["../etc/passwd", c.hash.toUpperCase(), c.hash.slice(0, 63), "", `${c.hash.slice(0, 62)}/.`, 42, null, undefined, { hash: c.hash }];
  for (const h of bad) {
    const hash = h as string;
    assert.equal(isChunkHash(h), false, String(h));
    await assert.rejects(store.put(hash, c.data), code("BAD_REQUEST"), String(h));
    await assert.rejects(store.get(hash), code("BAD_REQUEST"), String(h));
    await assert.rejects(store.has(hash), code("BAD_REQUEST"), String(h));
    await assert.rejects(store.delete(hash), code("BAD_REQUEST"), String(h));
  }
  assert.equal(isChunkHash(c.hash), true);
  await assert.rejects(store.put(c.hash, "not bytes" as unknown as Uint8Array), code("BAD_REQUEST"));
});

test("a duplicate put returns false and leaves the counters alone", async (t) => {
  const store = await openStore(t, { dir: tempDir(t) });
  const c = chunk();
  assert.equal(await store.put(c.hash, c.data), true);
  assert.equal(await store.put(c.hash, c.data), false);
  assert.deepEqual(store.usage(), { used: c.data.length, chunks: 1, capacity: null });
});

test("20 concurrent puts of the same chunk all resolve; one wins, one file exists", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir });
  const c = chunk(FILE_CHUNK);
  const results = await Promise.all(Array.from({ length: 20 }, () => store.put(c.hash, Buffer.from(c.data))));
  assert.equal(results.filter((r) => r).length, 1);
  assert.deepEqual(fs.readdirSync(path.join(dir, "chunks", c.hash.slice(0, 2))), [c.hash]);
  assert.deepEqual(tmpFiles(dir), []);
  assert.deepEqual(store.usage(), { used: c.data.length, chunks: 1, capacity: null });
});

test("capacity exceeded: NO_SPACE and used unchanged", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir, capacity: 10_000 });
  const a = chunk(6000);
  const b = chunk(6000);
  assert.equal(await store.put(a.hash, a.data), true);
  await assert.rejects(store.put(b.hash, b.data), code("NO_SPACE"));
  assert.deepEqual(store.usage(), { used: 6000, chunks: 1, capacity: 10_000 });
  assert.equal(fs.existsSync(fileOf(dir, b.hash)), false);
  assert.deepEqual(tmpFiles(dir), []);
  assert.ok((await store.free()) <= 4000);
});

test("node-id is made once and stays the same across reopen", async (t) => {
  const dir = tempDir(t);
  const s1 = await ChunkStore.open({ dir, log: quiet });
  await s1.close();
  const s2 = await openStore(t, { dir });
  assert.match(s1.nodeId, /^[0-9a-f-]{36}$/);
  assert.equal(s2.nodeId, s1.nodeId);
  assert.equal(fs.readFileSync(path.join(dir, "node-id"), "utf8").trim(), s1.nodeId);
  const other = await openStore(t, { dir: tempDir(t) });
  assert.notEqual(other.nodeId, s1.nodeId);
});

test("a chunk file corrupted on disk is found by verifyAll and by get(verify)", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir });
  const good = chunk();
  const bad = chunk(FILE_CHUNK);
  await store.put(good.hash, good.data);
  await store.put(bad.hash, bad.data);
  const file = fileOf(dir, bad.hash);
  const bytes = fs.readFileSync(file);
  bytes[100]! ^= 0x01;
  fs.writeFileSync(file, bytes);
  assert.deepEqual(await store.verifyAll(), [bad.hash]);
  await assert.rejects(store.get(bad.hash, { verify: true }), code("CORRUPT"));
  assert.deepEqual(await store.get(good.hash, { verify: true }), good.data);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(store.verifyAll({ signal: ac.signal }));
});

test("leftover temp files are removed on open", async (t) => {
  const dir = tempDir(t);
  await (await ChunkStore.open({ dir, log: quiet })).close();
  fs.writeFileSync(path.join(dir, "chunks", "tmp", "half-written"), "xx");
  fs.writeFileSync(path.join(dir, "chunks", "tmp", "another"), "yy");
  const store = await openStore(t, { dir });
  assert.deepEqual(tmpFiles(dir), []);
  assert.deepEqual(store.usage().chunks, 0);
});

test("usage counts survive reopen", async (t) => {
  const dir = tempDir(t);
  const s1 = await ChunkStore.open({ dir, capacity: 1_000_000, log: quiet });
  const cs = [chunk(1000), chunk(2000), chunk(3000)];
  for (const c of cs) await s1.put(c.hash, c.data);
  assert.deepEqual(s1.usage(), { used: 6000, chunks: 3, capacity: 1_000_000 });
  await s1.close();
  const s2 = await openStore(t, { dir, capacity: 1_000_000 });
  assert.deepEqual(s2.usage(), { used: 6000, chunks: 3, capacity: 1_000_000 });
  assert.deepEqual((await s2.list()).sort(), cs.map((c) => c.hash).sort());
});

test("delete then has is false; counters go down; a second delete returns false", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir });
  const c = chunk(5000);
  await store.put(c.hash, c.data);
  assert.equal(await store.delete(c.hash), true);
  assert.equal(await store.has(c.hash), false);
  assert.equal(fs.existsSync(fileOf(dir, c.hash)), false);
  assert.deepEqual(store.usage(), { used: 0, chunks: 0, capacity: null });
  assert.equal(await store.delete(c.hash), false);
  await assert.rejects(store.get(c.hash), code("NOT_FOUND"));
  assert.ok((await store.free()) > 0);
});
