import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test, type TestContext } from "node:test";
import { capture, count, flip, get, journals, open, recordOffsets, refused, tempDir } from "./helpers/meta.js";

// Several metadata folders (as HDFS's name directories): every one holds a full copy, start-up uses them
// together, a damaged or stale copy is repaired from the others, a failing one is dropped while running.

/** Two folders with ten records, each in a batch of its own, then a snapshot and five more. */
async function twoFolders(t: TestContext): Promise<{ a: string; b: string }> {
  const root = tempDir(t, "dfs-mirror-");
  const a = path.join(root, "disk1", "meta");
  const b = path.join(root, "disk2", "meta");
  const s = await open(t, [a, b]);
  for (let i = 0; i < 10; i++) await s.commit({ k: `k${i}`, v: i }).durable;
  await s.snapshot();
  for (let i = 10; i < 15; i++) await s.commit({ k: `k${i}`, v: i }).durable;
  await s.close();
  for (const name of ["snapshot.db", "journal.2"]) assert.deepEqual(fs.readFileSync(path.join(a, name)), fs.readFileSync(path.join(b, name)), name);
  return { a, b };
}

test("one folder damaged in the middle: start-up uses the other, repairs the copy and keeps the damaged one aside", async (t) => {
  const { a, b } = await twoFolders(t);
  const file = path.join(a, "journal.2");
  flip(file, recordOffsets(file)[2]!.offset + 22);
  const cap = capture();
  const s = await open(t, [a, b], { log: cap.log });
  assert.equal(count(s.db), 15);
  assert.ok(cap.lines.some((l) => l.includes("journal-copy-repaired") && l.includes(file)), cap.lines.join("\n"));
  assert.deepEqual(fs.readFileSync(file), fs.readFileSync(path.join(b, "journal.2")));
  const aside = fs.readdirSync(a).filter((n) => n.startsWith("damaged-"));
  assert.equal(aside.length, 1);
  assert.ok(fs.existsSync(path.join(a, aside[0]!, "journal.2")));
  await s.commit({ k: "after", v: 1 }).durable;
  await s.close();
  // Each folder alone now holds everything.
  for (const only of [a, b]) {
    const x = await open(t, only);
    assert.equal(count(x.db), 16);
    await x.close();
  }
});

test("both folders damaged at different places: start-up takes each record from the copy that holds it", async (t) => {
  const { a, b } = await twoFolders(t);
  const recs = recordOffsets(path.join(a, "journal.2"));
  flip(path.join(a, "journal.2"), recs[1]!.offset + 22);
  flip(path.join(b, "journal.2"), recs[3]!.offset + 5); // a length field: b's boundary is lost there
  flip(path.join(b, "snapshot.db"), 3000);
  const cap = capture();
  const s = await open(t, [a, b], { log: cap.log });
  assert.equal(count(s.db), 15);
  assert.equal(get(s.db, "k14"), 14);
  assert.equal(cap.lines.filter((l) => l.includes("journal-copy-repaired")).length, 2, cap.lines.join("\n"));
  assert.ok(cap.lines.some((l) => l.includes("snapshot-copied")));
});

test("both folders damaged at the same record: start-up stops", async (t) => {
  const { a, b } = await twoFolders(t);
  const at = recordOffsets(path.join(a, "journal.2"))[1]!.offset + 22;
  flip(path.join(a, "journal.2"), at);
  flip(path.join(b, "journal.2"), at);
  const err = await refused([a, b]);
  assert.match(err.message, new RegExp(`journal ${path.join(a, "journal.2")} and ${path.join(b, "journal.2")} is damaged at byte`));
});

test("a folder added later, or left behind, is brought up to date at start-up", async (t) => {
  const { a, b } = await twoFolders(t);
  const s = await open(t, [a]); // b is left out for a while
  for (let i = 15; i < 20; i++) await s.commit({ k: `k${i}`, v: i }).durable;
  await s.snapshot();
  await s.close();
  const c = path.join(path.dirname(path.dirname(a)), "disk3", "meta");
  const cap = capture();
  const all = await open(t, [a, b, c], { log: cap.log });
  assert.equal(count(all.db), 20);
  await all.close();
  for (const only of [b, c]) {
    const x = await open(t, only);
    assert.equal(count(x.db), 20, only);
    await x.close();
  }
});

test("a snapshot that start-up copies to another folder is the one on disk, not what replay made of it", async (t) => {
  const root = tempDir(t, "dfs-mirror-");
  const [a, b] = [path.join(root, "disk1", "meta"), path.join(root, "disk2", "meta")];
  const s = await open(t, [a]);
  await s.commit({ k: "n", add: 1 }).durable;
  await s.snapshot();
  for (let i = 0; i < 5; i++) await s.commit({ k: "n", add: 1 }).durable; // journal records after the snapshot
  await s.close();
  const both = await open(t, [a, b]); // b is new: a's snapshot and journal are copied there
  assert.equal(get(both.db, "n"), 6);
  await both.close();
  // Were the copy taken after replay, b would apply the journal a second time on top of it.
  const bAlone = await open(t, [b]);
  assert.equal(get(bAlone.db, "n"), 6);
});

test("copies that disagree (a folder run alone, then put back) stop start-up", async (t) => {
  const { a, b } = await twoFolders(t);
  const sa = await open(t, [a]);
  await sa.commit({ k: "only-a", v: 1 }).durable;
  await sa.close();
  const sb = await open(t, [b]);
  await sb.commit({ k: "only-b", v: 2 }).durable;
  await sb.close();
  const err = await refused([a, b]);
  assert.match(err.message, /disagree/);
});

test("a folder whose disk fails while running is dropped; writes go on, and the next start-up repairs it", async (t) => {
  const { a, b } = await twoFolders(t);
  const cap = capture();
  const s = await open(t, [a, b], { log: cap.log });
  // The next generation's file in b is a device that refuses every write, as a full or failed disk does.
  fs.symlinkSync("/dev/full", path.join(b, "journal.3"));
  await s.snapshot();
  assert.deepEqual(s.stats.dirs, [a]);
  assert.ok(cap.lines.some((l) => l.startsWith("error") && l.includes("meta-dir-dropped") && l.includes(b)), cap.lines.join("\n"));
  for (let i = 15; i < 25; i++) await s.commit({ k: `k${i}`, v: i }).durable;
  await s.close();
  assert.deepEqual(journals(a), ["journal.2", "journal.3"]);

  fs.rmSync(path.join(b, "journal.3")); // the disk is replaced
  const again = await open(t, [a, b]);
  assert.equal(count(again.db), 25);
  await again.close();
  const bAlone = await open(t, [b]);
  assert.equal(count(bAlone.db), 25);
});

test("a second process cannot open folders in use", async (t) => {
  const { a, b } = await twoFolders(t);
  const s = await open(t, [a, b]);
  await assert.rejects(open(t, [b]), (e: Error & { code?: string }) => e.code === "UNAVAILABLE" && /in use by process/.test(e.message));
  await s.close();
  const again = await open(t, [b]);
  assert.equal(count(again.db), 15);
});
