import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { scanJournal } from "../src/roles/directory/journal-format.js";
import { waitFor } from "./helpers/cluster.js";
import { capture, count, flip, get, journals, open, poison, recordOffsets, refused, tempDir } from "./helpers/meta.js";

// Damage that is not a torn write (a bad sector, bit rot) must stop start-up with the file and the byte,
// never be cut away silently; only the end of the last write may be cut.

/** Ten records, each in a batch of its own (each awaited), in journal.1 of a fresh folder. */
async function tenBatches(t: test.TestContext): Promise<{ dir: string; file: string }> {
  const dir = tempDir(t);
  const a = await open(t, dir);
  for (let i = 0; i < 10; i++) await a.commit({ k: `k${i}`, v: i }).durable;
  await a.close();
  return { dir, file: path.join(dir, "journal.1") };
}

test("a damaged record followed by later writes stops start-up, naming the file and the byte", async (t) => {
  const { dir, file } = await tenBatches(t);
  const recs = recordOffsets(file);
  for (const [what, at] of [["payload", recs[4]!.offset + 25], ["length field", recs[4]!.offset + 5]] as const) {
    flip(file, at);
    const before = fs.readFileSync(file);
    const err = await refused(dir, { recoverHint: "dfs directory recover --data X" });
    assert.equal(err.details?.file, file, what);
    assert.equal(err.details?.offset, recs[4]!.offset, what);
    assert.ok(err.message.includes(`${file} is damaged at byte ${recs[4]!.offset}`), err.message);
    assert.match(err.message, /dfs directory recover --data X/);
    assert.deepEqual(fs.readFileSync(file), before, "nothing is cut");
    flip(file, at);
  }
  const b = await open(t, dir);
  assert.equal(count(b.db), 10);
});

test("damage inside the last write, with records of that same write after it, is a torn write and is cut", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  for (let i = 0; i < 3; i++) await a.commit({ k: `a${i}`, v: i }).durable;
  const last = [];
  for (let i = 0; i < 10; i++) last.push(a.commit({ k: `b${i}`, v: i }).durable); // one batch
  await Promise.all(last);
  await a.close();
  const file = path.join(dir, "journal.1");
  const recs = recordOffsets(file);
  assert.equal(recs.length, 13);
  flip(file, recs[7]!.offset + 22); // b4: its batch started at b0, and everything after it is of that batch

  const cap = capture();
  const b = await open(t, dir, { log: cap.log });
  assert.equal(count(b.db), 7);
  assert.equal(get(b.db, "b3"), 3);
  assert.equal(get(b.db, "b4"), undefined);
  assert.ok(cap.lines.some((l) => l.startsWith("warn") && l.includes("journal-tail-cut")), cap.lines.join("\n"));
  assert.equal(fs.statSync(file).size, recs[7]!.offset);
});

test("damage at the end of the write before the last one is rot, not a torn write", async (t) => {
  const { dir, file } = await tenBatches(t);
  const recs = recordOffsets(file);
  flip(file, recs[8]!.offset + 22); // the ninth batch was made durable before the tenth was written
  const err = await refused(dir);
  assert.equal(err.details?.offset, recs[8]!.offset);
});

test("damage in an older journal generation stops start-up, even at its very end", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  for (let i = 0; i < 3; i++) await a.commit({ k: "n", add: 1 }).durable;
  await a.snapshot();
  await a.commit({ k: "n", add: 10 }).durable;
  await a.close();
  fs.rmSync(path.join(dir, "snapshot.db")); // start-up must replay journal.1 (from the empty database)
  fs.rmSync(path.join(dir, "snapshot.prev.db"), { force: true });
  const j1 = path.join(dir, "journal.1");
  fs.truncateSync(j1, fs.statSync(j1).size - 2); // looks torn, but journal.2 was written after it was whole

  const err = await refused(dir);
  assert.equal(err.details?.file, j1);
  assert.deepEqual(journals(dir), ["journal.1", "journal.2"], "nothing is set aside or discarded");
});

test("a damaged snapshot is rebuilt from the previous one and the journals kept since; with both damaged start-up stops", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  for (let i = 0; i < 5; i++) await a.commit({ k: `k${i}`, v: i }).durable;
  await a.snapshot();
  for (let i = 5; i < 10; i++) await a.commit({ k: `k${i}`, v: i }).durable;
  await a.snapshot();
  await a.commit({ k: "k10", v: 10 }).durable;
  await a.close();
  const snap = path.join(dir, "snapshot.db");
  const prev = path.join(dir, "snapshot.prev.db");
  const pristine = { snap: fs.readFileSync(snap), prev: fs.readFileSync(prev) };
  flip(snap, 5000);

  const cap = capture();
  const b = await open(t, dir, { log: cap.log });
  assert.equal(count(b.db), 11);
  assert.ok(cap.lines.some((l) => l.includes("snapshot-damaged-set-aside") && l.includes("crc mismatch")), cap.lines.join("\n"));
  const aside = fs.readdirSync(dir).filter((n) => n.startsWith("damaged-"));
  assert.equal(aside.length, 1);
  assert.ok(fs.existsSync(path.join(dir, aside[0]!, "snapshot.db")), "the damaged snapshot is kept, not deleted");
  await b.close();

  // Both damaged, and the journals before the previous snapshot are gone: nothing can replace them.
  fs.writeFileSync(snap, pristine.snap);
  fs.writeFileSync(prev, pristine.prev);
  flip(snap, 5000);
  flip(prev, 5000);
  const err = await refused(dir);
  assert.match(err.message, /snapshot .*snapshot(\.prev)?\.db is damaged \(crc mismatch\)/);
});

test("a record the schema refuses at replay stops start-up instead of being skipped", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir);
  await a.commit({ k: "x", v: 1 }).durable;
  await a.commit({ k: "poison", v: 2 }).durable;
  await a.close();
  poison.on = true;
  t.after(() => void (poison.on = false));
  const err = await refused(dir);
  assert.match(err.message, /refused at replay \(poison is refused now\)/);
  assert.equal(err.details?.offset, recordOffsets(path.join(dir, "journal.1"))[1]!.offset);
});

test("when the journals cannot reproduce memory, the snapshot is written from memory", async (t) => {
  const dir = tempDir(t);
  const cap = capture();
  const a = await open(t, dir, { log: cap.log });
  await a.commit({ k: "poison", v: 2 }).durable;
  await a.commit({ k: "x", v: 1 }).durable;
  poison.on = true;
  t.after(() => void (poison.on = false));
  await a.snapshot();
  assert.ok(cap.lines.some((l) => l.startsWith("error") && l.includes("checkpoint-refused")), cap.lines.join("\n"));
  assert.ok(cap.lines.some((l) => l.includes("snapshot-written-from-memory")));
  await a.commit({ k: "y", v: 3 }).durable;
  await a.close();

  const b = await open(t, dir); // the poisoned record is inside the snapshot now, not replayed
  assert.equal(get(b.db, "poison"), 2);
  assert.equal(get(b.db, "y"), 3);
});

test("a checkpoint that fails (disk full) leaves the store running and the folder consistent", async (t) => {
  const dir = tempDir(t);
  const cap = capture();
  const a = await open(t, dir, { log: cap.log, snapshotEvery: 5 });
  fs.symlinkSync("/dev/full", path.join(dir, "snapshot.2.tmp"));
  for (let i = 0; i < 5; i++) await a.commit({ k: `k${i}`, v: i }).durable;
  await waitFor(() => cap.lines.some((l) => l.includes("snapshot-failed")), "the failed snapshot is logged");
  assert.equal(a.stats.snapshots, 0);
  for (let i = 5; i < 12; i++) await a.commit({ k: `k${i}`, v: i }).durable;
  await waitFor(() => a.stats.snapshots === 1, "the next snapshot");
  await a.close();
  const b = await open(t, dir);
  assert.equal(count(b.db), 12);
});

test("records after a damaged length field are found again in a 64 MiB journal", async (t) => {
  const dir = tempDir(t);
  const a = await open(t, dir, { snapshotEvery: 1e9 });
  const big = "x".repeat(60_000);
  const batch = [];
  for (let i = 0; i < 1200; i++) batch.push(a.commit({ k: `k${i}`, path: big }).durable);
  await Promise.all(batch);
  await a.close();
  const file = path.join(dir, "journal.1");
  const buf = fs.readFileSync(file);
  assert.ok(buf.length > 64 * 1024 * 1024, `${buf.length} bytes`);
  buf[25] ^= 0xff; // the first record's length: its boundary is lost
  const scan = scanJournal(buf);
  assert.equal(scan.damage.length, 1);
  assert.equal(scan.records.length, scanJournal(fs.readFileSync(file)).records.length - 1);
});
