import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { ChunkCache } from "../src/roles/client/cache.js";
import { logger } from "../src/log.js";
import { tmpDir } from "./helpers/cluster.js";

const log = logger("test");
const chunk = () => {
  const data = randomBytes(1024);
  return { data, hash: createHash("sha256").update(data).digest("hex") };
};

test("the cache keeps at most its bound, evicting the least recently used chunk first", async (t) => {
  const dir = tmpDir(t);
  const cache = new ChunkCache(dir, 3 * 1024, log);
  const [a, b, c, d] = [chunk(), chunk(), chunk(), chunk()];
  for (const x of [a, b, c]) await cache.put(x.hash, x.data);
  assert.deepEqual(await cache.get(a.hash), a.data, "a is now the most recently used");
  await cache.put(d.hash, d.data);
  assert.equal(cache.bytes, 3 * 1024);
  assert.equal(cache.has(b.hash), false, "b was the least recently used");
  assert.ok(cache.has(a.hash) && cache.has(c.hash) && cache.has(d.hash));
  assert.equal(fs.existsSync(path.join(dir, b.hash.slice(0, 2), b.hash)), false, "b's file is gone");

  // A fresh process finds what is on disk, in recency order.
  const again = new ChunkCache(dir, 3 * 1024, log);
  assert.equal(again.bytes, 3 * 1024);
  assert.deepEqual(await again.get(d.hash), d.data);
});

test("a cached chunk that no longer matches its hash is dropped, never served", async (t) => {
  const dir = tmpDir(t);
  const cache = new ChunkCache(dir, 1024 * 1024, log);
  const a = chunk();
  await cache.put(a.hash, a.data);
  const file = path.join(dir, a.hash.slice(0, 2), a.hash);
  const bytes = fs.readFileSync(file);
  bytes[10] = bytes[10]! ^ 1;
  fs.writeFileSync(file, bytes);
  assert.equal(await cache.get(a.hash), undefined);
  assert.equal(cache.has(a.hash), false);
  assert.equal(cache.bytes, 0);
});
