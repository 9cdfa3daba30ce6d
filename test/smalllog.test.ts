import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import test, { type TestContext } from "node:test";
import type { Logger } from "../src/log.js";
import { DfsError } from "../src/protocol/errors.js";
import { ChunkStore, type ChunkStoreInit } from "../src/roles/storage/chunkstore.js";
import { PUT, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SMALL_CHUNK_MAX, scanSegment } from "../src/roles/storage/smalllog-format.js";
import { chunkOnDisk, corruptChunkOnDisk, segmentFiles } from "./helpers/chunks-on-disk.js";
import { spawnScript, startCluster, tmpDir } from "./helpers/cluster.js";
import { testChunk } from "./helpers/small-chunks.js";

/** A logger that keeps what was said, so that tests can check that a cut or a skip is logged. */
function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log: Logger & { lines: string[] } = {
    lines,
    debug() {},
    info: (msg: string) => void lines.push(msg),
    warn: (msg: string) => void lines.push(msg),
    error: (msg: string) => void lines.push(msg),
    child: () => log,
  };
  return log;
}

function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dfs-smalllog-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function openStore(t: TestContext, init: Partial<ChunkStoreInit> & { dir: string }): Promise<ChunkStore> {
  const store = await ChunkStore.open({ log: recorder(), ...init });
  t.after(() => store.close());
  return store;
}

function chunk(size = 1024): { hash: string; data: Buffer } {
  const data = randomBytes(size);
  return { hash: createHash("sha256").update(data).digest("hex"), data };
}

const code = (c: string) => (err: unknown) => err instanceof DfsError && err.code === c;
const fanoutFile = (dir: string, hash: string) => path.join(dir, "chunks", hash.slice(0, 2), hash);
/** Small segments and eager compaction, so that a few dozen 1 KiB chunks span several segments. */
const tiny = { segmentBytes: 16 * 1024, compactMinBytes: 1 };

test("small chunks: put, get, has, delete, put again, and all of it survives a restart", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir });
  const a = chunk(1024);
  const b = chunk(SMALL_CHUNK_MAX);
  const gone = chunk(10);
  for (const c of [a, b, gone]) assert.equal(await store.put(c.hash, c.data), true);
  assert.equal(await store.put(a.hash, a.data), false, "a duplicate put is refused");
  assert.deepEqual(await store.get(a.hash), a.data);
  assert.deepEqual(await store.get(b.hash, { verify: true }), b.data);
  assert.equal(await store.has(a.hash), true);
  assert.equal(fs.existsSync(fanoutFile(dir, a.hash)), false, "no file of its own");
  assert.deepEqual(chunkOnDisk(dir, a.hash)?.data, a.data, "the chunk is in the log");
  assert.deepEqual(store.usage(), { used: 1024 + SMALL_CHUNK_MAX + 10, chunks: 3, capacity: null });

  assert.equal(await store.delete(gone.hash, { unless: () => true }), false, "vetoed");
  assert.equal(await store.delete(gone.hash), true);
  assert.equal(await store.delete(gone.hash), false);
  assert.equal(await store.has(gone.hash), false);
  await assert.rejects(store.get(gone.hash), code("NOT_FOUND"));
  assert.deepEqual(store.usage(), { used: 1024 + SMALL_CHUNK_MAX, chunks: 2, capacity: null });
  assert.equal(await store.delete(b.hash), true);
  assert.equal(await store.put(b.hash, b.data), true, "put again after a delete");
  assert.deepEqual((await store.list()).sort(), [a.hash, b.hash].sort());
  await store.close();

  const again = await openStore(t, { dir });
  assert.deepEqual((await again.list()).sort(), [a.hash, b.hash].sort());
  assert.deepEqual(await again.get(b.hash, { verify: true }), b.data);
  await assert.rejects(again.get(gone.hash), code("NOT_FOUND"));
  assert.deepEqual(again.usage(), { used: 1024 + SMALL_CHUNK_MAX, chunks: 2, capacity: null });
  assert.deepEqual(await again.verifyAll(), []);
});

test("small and file chunks live side by side; capacity counts both", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir, capacity: 2 * SMALL_CHUNK_MAX });
  const big = chunk(SMALL_CHUNK_MAX + 1);
  const small = chunk(1000);
  await store.put(big.hash, big.data);
  await store.put(small.hash, small.data);
  assert.ok(fs.existsSync(fanoutFile(dir, big.hash)));
  assert.equal(fs.existsSync(fanoutFile(dir, small.hash)), false);
  const tooMuch = chunk(SMALL_CHUNK_MAX);
  await assert.rejects(store.put(tooMuch.hash, tooMuch.data), code("NO_SPACE"));
  assert.equal(await store.has(tooMuch.hash), false);
  assert.deepEqual((await store.list()).sort(), [big.hash, small.hash].sort());
  await store.close();
  const again = await openStore(t, { dir, capacity: 2 * SMALL_CHUNK_MAX });
  assert.deepEqual(again.usage(), { used: SMALL_CHUNK_MAX + 1 + 1000, chunks: 2, capacity: 2 * SMALL_CHUNK_MAX });
});

test("concurrent puts share fsyncs", async (t) => {
  const store = await openStore(t, { dir: tempDir(t) });
  const cs = Array.from({ length: 200 }, () => chunk(1024));
  const before = store.small.stats;
  await Promise.all(cs.map((c) => store.put(c.hash, c.data)));
  const after = store.small.stats;
  assert.equal(after.records - before.records, 200);
  assert.ok(after.fsyncs - before.fsyncs <= 20, `${after.fsyncs - before.fsyncs} fsyncs for 200 puts`);
  for (const c of cs.slice(0, 5)) assert.deepEqual(await store.get(c.hash, { verify: true }), c.data);
});

test("a record corrupted on disk is never served and the scrub finds it", async (t) => {
  const dir = tempDir(t);
  const store = await openStore(t, { dir });
  const good = chunk();
  const bad = chunk();
  await store.put(good.hash, good.data);
  await store.put(bad.hash, bad.data);
  corruptChunkOnDisk(dir, bad.hash, 100);
  await assert.rejects(store.get(bad.hash), code("CORRUPT"), "the record's CRC is checked on every read");
  await assert.rejects(store.get(bad.hash, { verify: true }), code("CORRUPT"));
  const condemned: string[] = [];
  assert.deepEqual(await store.verifyAll({ onCorrupt: async (h) => void condemned.push(h) }), [bad.hash]);
  assert.deepEqual(condemned, [bad.hash]);
  assert.deepEqual(await store.get(good.hash, { verify: true }), good.data);
  // What the scrubber does next: delete it, so that a good copy can be put again.
  assert.equal(await store.delete(bad.hash), true);
  assert.equal(await store.put(bad.hash, bad.data), true);
  assert.deepEqual(await store.get(bad.hash, { verify: true }), bad.data);
});

test("a torn tail of the last segment is cut at the last good record, and the cut is logged", async (t) => {
  const dir = tempDir(t);
  const first = await ChunkStore.open({ dir, log: recorder() });
  const cs = Array.from({ length: 10 }, () => chunk(1024));
  for (const c of cs) await first.put(c.hash, c.data);
  await first.close();
  const [seg] = segmentFiles(dir);
  const full = fs.statSync(seg!).size;
  fs.truncateSync(seg!, full - 500); // the last record loses half its data
  const log = recorder();
  const store = await openStore(t, { dir, log });
  assert.ok(log.lines.some((l) => /torn tail cut/.test(l)), log.lines.join("\n"));
  assert.equal(fs.statSync(seg!).size, full - (RECORD_HEADER_BYTES + 1024), "cut at the record boundary");
  for (const c of cs.slice(0, 9)) assert.deepEqual(await store.get(c.hash, { verify: true }), c.data);
  assert.equal(await store.has(cs[9]!.hash), false);
  // Appends go on after the cut, and survive another restart.
  assert.equal(await store.put(cs[9]!.hash, cs[9]!.data), true);
  await store.close();
  const again = await openStore(t, { dir });
  assert.equal((await again.list()).length, 10);
  assert.deepEqual(await again.verifyAll(), []);
});

test("a flipped byte in an older record costs that chunk only; records after it are kept, nothing is cut", async (t) => {
  const dir = tempDir(t);
  const first = await ChunkStore.open({ dir, log: recorder(), smallLog: tiny });
  const cs = Array.from({ length: 40 }, () => chunk(1024));
  for (const c of cs) await first.put(c.hash, c.data);
  await first.close();
  assert.ok(segmentFiles(dir).length >= 3, "several segments");
  const sizes = segmentFiles(dir).map((f) => fs.statSync(f).size);
  // One record in a sealed segment, one in the middle of the last: rot, not a torn write.
  const victims = [cs[3]!, cs[37]!];
  for (const v of victims) corruptChunkOnDisk(dir, v.hash, 7);
  const log = recorder();
  const store = await openStore(t, { dir, log, smallLog: tiny });
  assert.ok(log.lines.some((l) => /damaged records skipped/.test(l)), log.lines.join("\n"));
  assert.deepEqual(segmentFiles(dir).map((f) => fs.statSync(f).size), sizes, "no segment was cut");
  for (const c of cs) {
    if (victims.includes(c)) assert.equal(await store.has(c.hash), false);
    else assert.deepEqual(await store.get(c.hash, { verify: true }), c.data);
  }
  assert.deepEqual(await store.verifyAll(), []);
});

test("damaged headers do not stop start-up", async (t) => {
  const dir = tempDir(t);
  const first = await ChunkStore.open({ dir, log: recorder(), smallLog: tiny });
  const cs = Array.from({ length: 40 }, () => chunk(1024));
  for (const c of cs) await first.put(c.hash, c.data);
  await first.close();
  const segs = segmentFiles(dir);
  const fd = fs.openSync(segs[0]!, "r+");
  fs.writeSync(fd, Buffer.from("XXXX"), 0, 4, 0); // the first segment's header
  fs.writeSync(fd, Buffer.alloc(RECORD_HEADER_BYTES, 0xee), 0, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES); // and its first record's
  fs.closeSync(fd);
  const store = await openStore(t, { dir, smallLog: tiny });
  assert.equal(await store.has(cs[0]!.hash), false);
  assert.deepEqual(await store.get(cs[1]!.hash, { verify: true }), cs[1]!.data);
  assert.equal((await store.list()).length, 39);
});

test("compaction frees mostly dead segments; deleted chunks stay deleted and live ones intact across restarts", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open({ dir, log: recorder(), smallLog: tiny });
  const cs = Array.from({ length: 60 }, () => chunk(1024));
  for (const c of cs) await store.put(c.hash, c.data);
  const segsBefore = segmentFiles(dir);
  const kept = cs.filter((_, i) => i % 5 === 0);
  for (const c of cs) if (!kept.includes(c)) await store.delete(c.hash);
  await store.small.idle();
  assert.ok(store.small.stats.compactions >= 2, `compactions: ${store.small.stats.compactions}`);
  const gone = segsBefore.filter((f) => !fs.existsSync(f));
  assert.ok(gone.length >= 2, "compacted segments are removed");
  for (const c of kept) assert.deepEqual(await store.get(c.hash, { verify: true }), c.data);
  assert.deepEqual(store.usage(), { used: kept.length * 1024, chunks: kept.length, capacity: null });
  await store.close();
  for (let round = 0; round < 2; round++) {
    const again = await ChunkStore.open({ dir, log: recorder(), smallLog: tiny });
    assert.deepEqual((await again.list()).sort(), kept.map((c) => c.hash).sort());
    assert.deepEqual(await again.verifyAll(), []);
    await again.small.idle();
    await again.close();
  }
});

test("a tombstone is copied forward while an older segment may still hold the chunk", async (t) => {
  const dir = tempDir(t);
  const store = await ChunkStore.open({ dir, log: recorder(), smallLog: tiny });
  // Segment 1: the victim and chunks that stay, so it is never compacted.
  const victim = chunk(1024);
  await store.put(victim.hash, victim.data);
  const stay: ReturnType<typeof chunk>[] = [];
  while (store.small.activeSeq === 1) {
    const c = chunk(1024);
    await store.put(c.hash, c.data);
    stay.push(c);
  }
  // Segment 2: the victim's tombstone among chunks that are then deleted, so that it is compacted.
  assert.equal(await store.delete(victim.hash), true);
  const fleeting: ReturnType<typeof chunk>[] = [];
  while (store.small.activeSeq === 2) {
    const c = chunk(1024);
    await store.put(c.hash, c.data);
    fleeting.push(c);
  }
  for (const c of fleeting) await store.delete(c.hash);
  await store.small.idle();
  const segs = segmentFiles(dir).map((f) => path.basename(f));
  assert.ok(segs.includes("0000000001.seg") && !segs.includes("0000000002.seg"), segs.join(","));
  await store.close();
  const again = await openStore(t, { dir, smallLog: tiny });
  assert.equal(await again.has(victim.hash), false, "not brought back by segment 1's put");
  assert.equal((await again.list()).length, stay.length);
});

/** Starts the crash child and waits for it to kill itself at the crash point. */
async function crashChild(t: TestContext, dir: string, mode: string, fault: string): Promise<string[]> {
  const p = spawnScript(t, "test/helpers/smalllog-child.ts", [dir, mode], { env: { DFS_FAULT: fault, DFS_LOG_LEVEL: "warn" } });
  await p.exited;
  assert.equal(p.child.signalCode, "SIGKILL", `the child reached the crash point:\n${p.stdout.slice(-500)}\n${p.stderr}`);
  return p.stdout.split("\n");
}

const numbers = (lines: string[], verb: string) => new Set(lines.filter((l) => l.startsWith(verb + " ")).map((l) => Number(l.slice(verb.length + 1))));

/** Every chunk listed is one the child wrote and is intact; nothing corrupt is served. */
async function checkNothingForeign(store: ChunkStore, total: number): Promise<void> {
  const known = new Set(Array.from({ length: total }, (_, i) => testChunk(i).hash));
  for (const h of await store.list()) assert.ok(known.has(h), `unknown chunk ${h}`);
  assert.deepEqual(await store.verifyAll(), []);
}

test("kill -9 between a batch's write and its fsync loses no acknowledged put", async (t) => {
  const dir = tmpDir(t, "dfs-smalllog-crash-");
  const lines = await crashChild(t, dir, "puts", "smalllog-before-fsync@10");
  const acked = numbers(lines, "put");
  assert.ok(acked.size > 0);
  // The batch that was never fsynced is the file's end; tear its last record as a power cut could.
  const seg = segmentFiles(dir).at(-1)!;
  fs.truncateSync(seg, fs.statSync(seg).size - 100);
  const log = recorder();
  const store = await openStore(t, { dir, log });
  assert.ok(log.lines.some((l) => /torn tail cut/.test(l)), log.lines.join("\n"));
  for (const i of acked) {
    const c = testChunk(i);
    assert.deepEqual(await store.get(c.hash, { verify: true }), c.data, `acknowledged put ${i}`);
  }
  await checkNothingForeign(store, 2000);
  assert.ok(store.usage().chunks >= acked.size);
});

test("kill -9 in the middle of a compaction loses nothing and brings no deleted chunk back", async (t) => {
  const dir = tmpDir(t, "dfs-smalllog-crash-");
  const lines = await crashChild(t, dir, "compaction", "smalllog-mid-compaction");
  const acked = numbers(lines, "put");
  const deleting = numbers(lines, "deleting");
  const deleted = numbers(lines, "deleted");
  assert.equal(acked.size, 200);
  assert.ok(deleted.size > 0);
  const inSegments = new Map<string, number>();
  for (const f of segmentFiles(dir)) {
    const seq = Number(path.basename(f, ".seg"));
    for (const r of scanSegment(fs.readFileSync(f), seq).records) if (r.type === PUT) inSegments.set(r.hash, (inSegments.get(r.hash) ?? 0) + 1);
  }
  assert.ok([...inSegments.values()].some((n) => n > 1), "killed with copies made and the old segment still there");
  for (let round = 0; round < 2; round++) {
    const store = await ChunkStore.open({ dir, log: recorder(), smallLog: { segmentBytes: 32 * 1024, compactMinBytes: 1 } });
    for (const i of acked) {
      const c = testChunk(i);
      if (deleted.has(i)) assert.equal(await store.has(c.hash), false, `deleted chunk ${i} stays deleted`);
      else if (!deleting.has(i)) assert.deepEqual(await store.get(c.hash, { verify: true }), c.data, `chunk ${i}`);
    }
    await checkNothingForeign(store, 200);
    // The interrupted compaction is done again; the next round checks what it left.
    await store.small.idle();
    if (round === 0) assert.ok(store.small.stats.compactions >= 1);
    await store.close();
  }
});

test("a 1 KiB file written through a cluster lands in the log of both storage nodes", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  const data = randomBytes(1024);
  fs.writeFileSync(path.join(work, "f"), data);
  assert.equal((await c.client(["write", "/small", "f"], { cwd: work })).code, 0);
  const info = JSON.parse((await c.client(["stat", "--json", "/small"])).stdout) as { chunks: { hash: string; replicas: unknown[] }[] };
  const hash = info.chunks[0]!.hash;
  assert.equal(info.chunks[0]!.replicas.length, 2);
  for (let i = 0; i < 2; i++) {
    const dataDir = path.join(c.root, `storage-${i}`);
    assert.equal(fs.existsSync(fanoutFile(dataDir, hash)), false, "no chunk file");
    const found = chunkOnDisk(dataDir, hash);
    assert.ok(found && found.file.includes(path.join("chunks", "log")), `node ${i} holds it in its log`);
    assert.deepEqual(found.data, data);
  }
  // Read back by a client with a cold cache, so that it comes from a storage node's log.
  const read = await c.client(["read", "/small", "out"], { cwd: work, cache: path.join(work, "cold") });
  assert.equal(read.code, 0, read.stderr);
  assert.deepEqual(fs.readFileSync(path.join(work, "out")), data);
});
