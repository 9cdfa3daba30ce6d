import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import CRC32 from "crc-32";
import { DfsError } from "../src/protocol/errors.js";
import { encodeRecord, fileHeader, scanJournal } from "../src/roles/directory/journal-format.js";
import { waitFor } from "./helpers/cluster.js";
import { capture, count, get, journals, open, refused, tempDir } from "./helpers/meta.js";

const records = (file: string) => scanJournal(fs.readFileSync(file)).records.length;

test("commit is visible at once and survives a reopen", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  const { durable } = a.commit({ k: "x", v: 1 });
  assert.equal(get(a.db, "x"), 1);
  await durable;
  a.commit({ k: "y", v: 2 });
  await a.close();
  await a.close(); // idempotent
  assert.throws(() => a.commit({ k: "z", v: 3 }), (e: unknown) => e instanceof DfsError && e.code === "UNAVAILABLE");

  const b = await open(t, dir);
  assert.equal(get(b.db, "x"), 1);
  assert.equal(get(b.db, "y"), 2);
  assert.deepEqual(journals(dir), ["journal.1"]);
});

test("a refused record leaves no trace, also after reopen", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  await a.commit({ k: "x", v: 1 }).durable;
  const bytes = a.stats.journalBytes;
  assert.throws(() => a.commit({ k: "x", v: 99, conflict: true }), (e: unknown) => e instanceof DfsError && e.code === "CONFLICT");
  assert.throws(() => a.commit({ k: "new", v: 5, conflict: true }), /refused new/);
  assert.equal(get(a.db, "x"), 1);
  assert.equal(get(a.db, "new"), undefined);
  a.commit({ k: "after", v: 7 }); // the db is not left inside a transaction
  await a.barrier();
  assert.equal(a.stats.records, 2);
  assert.ok(a.stats.journalBytes > bytes);
  await a.close();

  const b = await open(t, dir);
  assert.equal(get(b.db, "x"), 1);
  assert.equal(get(b.db, "new"), undefined);
  assert.equal(get(b.db, "after"), 7);
  assert.equal(records(path.join(dir, "journal.1")), 2);
});

test("1000 commits in one tick share a few fsyncs", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  const done = [];
  for (let i = 0; i < 1000; i++) done.push(a.commit({ k: `k${i}`, v: i }).durable);
  await Promise.all(done);
  assert.equal(a.stats.records, 1000);
  assert.ok(a.stats.fsyncs < 1000 / 5, `fsyncs=${a.stats.fsyncs}`);
  assert.ok(a.stats.fsyncs <= 2, `fsyncs=${a.stats.fsyncs}`);
  await a.close();
  const b = await open(t, dir);
  assert.equal(count(b.db), 1000);
  assert.equal(get(b.db, "k999"), 999);
});

test("barrier waits for everything committed so far", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  for (let i = 0; i < 50; i++) a.commit({ k: `k${i}`, v: i });
  await a.barrier();
  assert.equal(a.stats.records, 50);
  assert.equal(records(path.join(dir, "journal.1")), 50);
});

for (const [name, damage, survivors] of [
  ["garbage appended", (f: string) => fs.appendFileSync(f, Buffer.from([1, 2, 3, 4, 5])), 10],
  ["last record cut short", (f: string) => fs.truncateSync(f, fs.statSync(f).size - 3), 9],
  ["absurd length", (f: string) => fs.appendFileSync(f, Buffer.from([0xc1, 0x4a, 0x52, 0x4e, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1])), 10],
] as const) {
  test(`torn tail (${name}) is cut and later appends survive`, async (t) => {
    const dir = tempDir(t);
    const a = await open(t, dir);
    for (let i = 0; i < 10; i++) await a.commit({ k: `k${i}`, v: i }).durable; // ten batches: only the last may be torn
    await a.close();
    const file = path.join(dir, "journal.1");
    const before = fs.statSync(file).size;
    damage(file);

    const cap = capture();
    const b = await open(t, dir, { log: cap.log });
    assert.equal(count(b.db), survivors);
    const cut = cap.lines.find((l) => l.includes("journal-tail-cut"));
    assert.ok(cut?.startsWith("warn"), cap.lines.join("\n"));
    const scan = scanJournal(fs.readFileSync(file));
    assert.deepEqual(scan.damage, []);
    if (survivors === 10) assert.equal(fs.statSync(file).size, before);

    for (let i = 100; i < 105; i++) b.commit({ k: `k${i}`, v: i });
    await b.close();
    const c = await open(t, dir);
    assert.equal(count(c.db), survivors + 5);
    assert.equal(get(c.db, "k104"), 104);
  });
}

/** A journal in the first format (no file header): u32 length | i32 CRC | payload. */
function legacyFrame(rec: unknown): Buffer {
  const payload = encodeRecord(rec).subarray(20);
  const h = Buffer.alloc(8);
  h.writeUInt32LE(payload.length, 0);
  h.writeInt32LE(CRC32.buf(payload), 4);
  return Buffer.concat([h, payload]);
}

test("scanJournal: intact records, every kind of bad tail, and the records after damage", () => {
  const recs = [encodeRecord({ a: 1 }), encodeRecord({ b: 2 }), encodeRecord({ c: "/x" })];
  const good = Buffer.concat([fileHeader(1), ...recs]);
  const at = [20, 20 + recs[0]!.length, 20 + recs[0]!.length + recs[1]!.length];
  const clean = scanJournal(good);
  assert.equal(clean.format, 2);
  assert.equal(clean.generation, 1);
  assert.deepEqual(clean.records.map((r) => r.offset), at);
  assert.deepEqual(clean.damage, []);

  for (const [what, tail] of [
    ["short header", Buffer.from([0xc1, 0x4a, 0x52])],
    ["short payload", recs[0]!.subarray(0, recs[0]!.length - 1)],
    ["crc mismatch", Buffer.concat([recs[0]!.subarray(0, 20), Buffer.from([0x80])])],
    ["garbage", Buffer.from("not a record at all")],
  ] as const) {
    const r = scanJournal(Buffer.concat([good, tail]));
    assert.equal(r.records.length, 3, what);
    assert.deepEqual(r.damage.map((d) => [d.offset, d.end]), [[good.length, good.length + tail.length]], what);
  }

  // A flipped payload byte, then a flipped length byte: the damaged record is skipped, the next one found again.
  for (const byte of [at[1]! + 22, at[1]! + 5]) {
    const bad = Buffer.from(good);
    bad[byte]! ^= 0xff;
    const r = scanJournal(bad);
    assert.deepEqual(r.records.map((x) => x.offset), [at[0], at[2]]);
    assert.deepEqual(r.damage.map((d) => [d.offset, d.end]), [[at[1], at[2]]]);
  }

  // The first format is still read, also after damage in its middle.
  const legacy = [legacyFrame({ a: 1 }), legacyFrame({ b: 2 }), legacyFrame({ c: 3 })];
  const old = Buffer.concat(legacy);
  assert.equal(scanJournal(old).format, 1);
  assert.equal(scanJournal(old).records.length, 3);
  old[legacy[0]!.length + 9]! ^= 0xff;
  const r = scanJournal(old);
  assert.equal(r.format, 1);
  assert.deepEqual(r.records.map((x) => x.offset), [0, legacy[0]!.length + legacy[1]!.length]);
  assert.equal(r.damage.length, 1);
});

test("a journal of the first format is replayed, and appends go to a new generation in the current one", async (t) => {
  const dir = tempDir(t);
  fs.writeFileSync(path.join(dir, "journal.1"), Buffer.concat([legacyFrame({ k: "a", v: 1 }), legacyFrame({ k: "b", v: 2 })]));
  const a = await open(t, dir);
  assert.equal(get(a.db, "a"), 1);
  assert.equal(get(a.db, "b"), 2);
  await a.commit({ k: "c", v: 3 }).durable;
  await a.close();
  assert.deepEqual(journals(dir), ["journal.1", "journal.2"]);
  assert.equal(scanJournal(fs.readFileSync(path.join(dir, "journal.1"))).format, 1);
  assert.equal(scanJournal(fs.readFileSync(path.join(dir, "journal.2"))).format, 2);
  const b = await open(t, dir);
  assert.equal(count(b.db), 3);
});

test("snapshot, more commits, reopen: everything is there and old journals are gone", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  const stmt = a.db.prepare("SELECT v FROM kv WHERE k = ?"); // prepared before export, used after
  t.after(() => void stmt.free());
  for (let i = 0; i < 5; i++) a.commit({ k: `k${i}`, v: i });
  await a.snapshot();
  assert.equal(a.stats.snapshots, 1);
  for (let i = 5; i < 10; i++) a.commit({ k: `k${i}`, v: i });
  assert.equal(get(a.db, "k9"), 9);
  assert.deepEqual(stmt.get(["k7"]), [7]);
  stmt.reset();
  await a.barrier();
  // The journal before the snapshot stays while it is the way back from a damaged snapshot.
  assert.deepEqual(journals(dir), ["journal.1", "journal.2"]);
  await a.snapshot();
  assert.deepEqual(journals(dir), ["journal.2", "journal.3"]);
  await a.close();
  assert.ok(fs.existsSync(path.join(dir, "snapshot.db")));
  assert.ok(fs.existsSync(path.join(dir, "snapshot.prev.db")));

  const b = await open(t, dir);
  assert.equal(count(b.db), 10);
  assert.equal(get(b.db, "k4"), 4);
  assert.equal(get(b.db, "k9"), 9);
});

test("automatic snapshots every N records, never two at once", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir, { snapshotEvery: 10 });
  for (const n of [1, 2]) {
    for (let i = 0; i < 10; i++) await a.commit({ k: "n", add: 1 }).durable;
    await waitFor(() => a.stats.snapshots === n, `snapshot ${n}`);
  }
  const burst = [];
  for (let i = 0; i < 100; i++) burst.push(a.commit({ k: "n", add: 1 }).durable); // one tick: one snapshot queued
  await Promise.all(burst);
  await waitFor(() => a.stats.snapshots === 3, "snapshot 3");
  await a.close();
  assert.equal(a.stats.snapshots, 3);
  assert.deepEqual(journals(dir), ["journal.3", "journal.4"]);
  const b = await open(t, dir);
  assert.equal(get(b.db, "n"), 120);
});

test("a leftover temp snapshot file is ignored", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  a.commit({ k: "x", v: 1 });
  await a.snapshot();
  a.commit({ k: "y", v: 2 });
  await a.close();
  fs.writeFileSync(path.join(dir, "snapshot.db.tmp"), Buffer.from("half a snapshot"));

  const b = await open(t, dir);
  assert.equal(get(b.db, "x"), 1);
  assert.equal(get(b.db, "y"), 2);
  assert.ok(!fs.existsSync(path.join(dir, "snapshot.db.tmp")));
});

test("an older journal left beside a snapshot is not applied twice", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  for (let i = 0; i < 3; i++) a.commit({ k: "n", add: 1 });
  await a.barrier();
  const j1 = fs.readFileSync(path.join(dir, "journal.1"));
  await a.snapshot(); // covers journal.1; crash "before the delete" is simulated by putting it back
  for (let i = 0; i < 2; i++) a.commit({ k: "n", add: 1 });
  await a.close();
  fs.writeFileSync(path.join(dir, "journal.1"), j1);

  const b = await open(t, dir);
  assert.equal(get(b.db, "n"), 5);
  await b.close();
  assert.deepEqual(journals(dir), ["journal.1", "journal.2"]);

  // Crash before the rename (first snapshot never landed): both journals replay, in order.
  fs.rmSync(path.join(dir, "snapshot.db"));
  fs.writeFileSync(path.join(dir, "journal.1"), j1);
  const c = await open(t, dir);
  assert.equal(get(c.db, "n"), 5);
});

test("a missing journal generation is refused rather than silently skipped", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  a.commit({ k: "x", v: 1 });
  await a.close();
  fs.renameSync(path.join(dir, "journal.1"), path.join(dir, "journal.2"));
  const err = await refused(dir);
  assert.match(err.message, /generation 1 is missing/);
});

test("the live tables sit in an in-memory database, apart from the image they were loaded from", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  a.commit({ k: "x", v: 1 });
  await a.snapshot();
  await a.close();
  const b = await open(t, dir); // from the snapshot image
  const names = (schema: string) => b.db.exec(`SELECT name FROM ${schema}.sqlite_master`)[0]?.values.flat() ?? [];
  // Tables in sql.js's main file would be copied whole each time that file grows.
  assert.deepEqual(names("main"), []);
  assert.deepEqual(names("live"), ["kv", "sqlite_autoindex_kv_1"]);
  const file = b.db.exec("PRAGMA database_list")[0]!.values.find((r) => r[1] === "live")![2];
  assert.equal(file, "", "an in-memory database has no file");
  b.commit({ k: "y", v: 2 });
  assert.equal(count(b.db), 2);
});
