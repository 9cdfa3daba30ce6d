import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { test, type TestContext } from "node:test";
import CRC32 from "crc-32";
import type { Database } from "sql.js";
import { DfsError } from "../src/protocol/errors.js";
import type { Logger } from "../src/log.js";
import { decodeJournal, encodeRecord, readJournal } from "../src/roles/directory/journal.js";
import { openMetaStore, type MetaStore } from "../src/roles/directory/metastore.js";

type Rec = { k: string; v?: number; add?: number; conflict?: boolean };

const SCHEMA = "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)";

function apply(db: Database, rec: Rec): void {
  if (rec.add !== undefined) {
    db.run("INSERT INTO kv(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = v + excluded.v", [rec.k, rec.add]);
    return;
  }
  db.run("INSERT INTO kv(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", [rec.k, rec.v ?? 0]);
  if (rec.conflict) throw new DfsError("CONFLICT", `refused ${rec.k}`); // after a write, to prove the rollback
}

function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const mk = (c: string): Logger => {
    const at = (level: string) => (event: string, fields?: Record<string, unknown>) =>
      void lines.push(`${level} ${c} ${event} ${JSON.stringify(fields ?? {})}`);
    return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error"), child: (x) => mk(`${c}:${x}`) };
  };
  return { log: mk("test"), lines };
}

function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dfs-metastore-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function open(t: TestContext, dir: string, extra: { snapshotEvery?: number; log?: Logger } = {}): Promise<MetaStore<Rec>> {
  const store = await openMetaStore<Rec>({ dir, schema: SCHEMA, apply, log: extra.log ?? capture().log, ...extra });
  t.after(() => store.close());
  return store;
}

function get(db: Database, k: string): number | undefined {
  const r = db.exec("SELECT v FROM kv WHERE k = ?", [k]);
  return r.length ? Number(r[0]!.values[0]![0]) : undefined;
}

function count(db: Database): number {
  return Number(db.exec("SELECT count(*) FROM kv")[0]!.values[0]![0]);
}

const journals = (dir: string) => fs.readdirSync(dir).filter((n) => /^journal\.\d+$/.test(n)).sort();

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
  assert.equal((await readJournal(path.join(dir, "journal.1"))).records.length, 2);
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
  assert.equal((await readJournal(path.join(dir, "journal.1"))).records.length, 50);
});

for (const [name, damage, survivors] of [
  ["garbage appended", (f: string) => fs.appendFileSync(f, Buffer.from([1, 2, 3, 4, 5])), 10],
  ["last record cut short", (f: string) => fs.truncateSync(f, fs.statSync(f).size - 3), 9],
  ["absurd length", (f: string) => fs.appendFileSync(f, Buffer.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1])), 10],
] as const) {
  test(`torn tail (${name}) is cut and later appends survive`, async (t) => {
    const dir = tempDir(t);
    const a = await open(t, dir);
    for (let i = 0; i < 10; i++) a.commit({ k: `k${i}`, v: i });
    await a.close();
    const file = path.join(dir, "journal.1");
    const before = fs.statSync(file).size;
    damage(file);

    const cap = capture();
    const b = await open(t, dir, { log: cap.log });
    assert.equal(count(b.db), survivors);
    const cut = cap.lines.find((l) => l.includes("journal-tail-cut"));
    assert.ok(cut?.startsWith("warn"), cap.lines.join("\n"));
    const good = (await readJournal(file)).end;
    assert.equal(fs.statSync(file).size, good);
    if (survivors === 10) assert.equal(good, before);

    for (let i = 100; i < 105; i++) b.commit({ k: `k${i}`, v: i });
    await b.close();
    const c = await open(t, dir);
    assert.equal(count(c.db), survivors + 5);
    assert.equal(get(c.db, "k104"), 104);
  });
}

test("a CRC-corrupted middle record stops replay there", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  const recs: Rec[] = [1, 2, 3, 4, 5].map((i) => ({ k: `k${i}`, v: i }));
  for (const r of recs) a.commit(r);
  await a.close();
  const file = path.join(dir, "journal.1");
  const buf = fs.readFileSync(file);
  const third = encodeRecord(recs[0]).length + encodeRecord(recs[1]).length;
  buf[third + 8 + 2]! ^= 0xff; // a payload byte of record 3
  fs.writeFileSync(file, buf);

  const b = await open(t, dir);
  assert.deepEqual(
    b.db.exec("SELECT k FROM kv ORDER BY k")[0]!.values.map((r) => r[0]),
    ["k1", "k2"],
  );
  assert.equal(fs.statSync(file).size, third);
});

test("decodeJournal stops at every kind of bad tail", () => {
  const good = Buffer.concat([encodeRecord({ a: 1 }), encodeRecord({ b: 2 })]);
  const frame = (payload: Buffer, crc = CRC32.buf(payload)) => {
    const h = Buffer.alloc(8);
    h.writeUInt32LE(payload.length, 0);
    h.writeInt32LE(crc, 4);
    return Buffer.concat([h, payload]);
  };
  const cases: [string, Buffer][] = [
    ["short header", Buffer.from([1, 0, 0])],
    ["short payload", frame(Buffer.from([0x93, 1, 2, 3])).subarray(0, 10)],
    ["crc mismatch", frame(Buffer.from([0x01]), 12345)],
    ["undecodable", frame(Buffer.from([0x92, 1]))],
    ["absurd length", Buffer.from([0, 0, 0, 0x10, 0, 0, 0, 0])],
  ];
  assert.deepEqual(decodeJournal(good).records, [{ a: 1 }, { b: 2 }]);
  for (const [what, tail] of cases) {
    const r = decodeJournal(Buffer.concat([good, tail]));
    assert.equal(r.records.length, 2, what);
    assert.equal(r.end, good.length, what);
    assert.ok(r.problem, what);
  }
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
  assert.deepEqual(journals(dir), ["journal.2"]);
  await a.close();
  assert.ok(fs.existsSync(path.join(dir, "snapshot.db")));

  const b = await open(t, dir);
  assert.equal(count(b.db), 10);
  assert.equal(get(b.db, "k4"), 4);
  assert.equal(get(b.db, "k9"), 9);
});

test("automatic snapshots every N records, never two at once", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir, { snapshotEvery: 10 });
  for (let i = 0; i < 25; i++) {
    a.commit({ k: "n", add: 1 });
    await a.barrier();
  }
  const burst = [];
  for (let i = 0; i < 100; i++) burst.push(a.commit({ k: "n", add: 1 }).durable); // one tick: one snapshot queued
  await Promise.all(burst);
  await a.close();
  assert.ok(a.stats.snapshots >= 2 && a.stats.snapshots <= 4, `snapshots=${a.stats.snapshots}`);
  assert.equal(journals(dir).length, 1);
  const b = await open(t, dir);
  assert.equal(get(b.db, "n"), 125);
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
  assert.deepEqual(journals(dir), ["journal.2"]);

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
  await assert.rejects(
    openMetaStore<Rec>({ dir, schema: SCHEMA, apply, log: capture().log }),
    (e: unknown) => e instanceof DfsError && e.code === "CORRUPT",
  );
});

test("a corrupt journal in the middle of the chain ends replay; later journals are set aside", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  for (let i = 0; i < 3; i++) a.commit({ k: "n", add: 1 });
  await a.barrier();
  const j1 = fs.readFileSync(path.join(dir, "journal.1"));
  await a.snapshot();
  a.commit({ k: "n", add: 10 });
  await a.close();
  fs.rmSync(path.join(dir, "snapshot.db"));
  fs.writeFileSync(path.join(dir, "journal.1"), j1.subarray(0, j1.length - 2)); // third record torn

  const b = await open(t, dir);
  assert.equal(get(b.db, "n"), 2);
  assert.deepEqual(journals(dir), ["journal.1"]);
  assert.ok(fs.existsSync(path.join(dir, "journal.2.discarded")));
  b.commit({ k: "n", add: 100 });
  await b.close();
  const c = await open(t, dir);
  assert.equal(get(c.db, "n"), 102);
});
