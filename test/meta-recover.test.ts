import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { formatRecoverReport } from "../src/cli.js";
import { recoverMeta } from "../src/roles/directory/recover.js";
import { apply, capture, count, flip, get, open, recordOffsets, refused, SCHEMA, tempDir } from "./helpers/meta.js";

const schema = { schema: SCHEMA, apply };

test("recover keeps what still applies, names what is lost or changed, and writes every folder", async (t) => {
  const root = tempDir(t, "dfs-recover-");
  const dirs = [path.join(root, "a"), path.join(root, "b")];
  const s = await open(t, dirs);
  await s.commit({ k: "a", v: 1, path: "/a" }).durable;
  await s.commit({ k: "b", v: 2, path: "/b" }).durable; // to be damaged in both copies
  await s.commit({ k: "c", v: 3, path: "/c", needs: "b" }).durable; // no longer applies without b
  await s.commit({ k: "d", v: 4, path: "/c", to: "/d" }).durable; // applies, but names a lost path
  await s.commit({ k: "e", v: 5, path: "/e" }).durable;
  await s.close();
  const at = recordOffsets(path.join(dirs[0]!, "journal.1"))[1]!.offset;
  for (const d of dirs) flip(path.join(d, "journal.1"), at + 30);
  const damaged = fs.readFileSync(path.join(dirs[0]!, "journal.1"));
  await refused(dirs);

  const r = await recoverMeta(schema, dirs, capture().log);
  assert.equal(r.intact, false);
  assert.deepEqual(r.damaged.map((d) => [d.offset, d.reason]), [[at, "payload crc mismatch"]]);
  assert.deepEqual(r.refused.map((x) => [x.reason, x.paths]), [["c needs b", ["/c"]]]);
  assert.equal(r.kept, 3);
  assert.deepEqual(r.lost, ["/b", "/c"]);
  assert.deepEqual(r.changed, ["/d"]);
  const text = formatRecoverReport(r);
  assert.match(text, /^lost \/b$/m);
  assert.match(text, /^changed \/d$/m);
  for (const d of dirs) {
    const aside = fs.readdirSync(d).filter((n) => n.startsWith("damaged-"));
    assert.equal(aside.length, 1, d);
    assert.deepEqual(fs.readFileSync(path.join(d, aside[0]!, "journal.1")), damaged);
    assert.deepEqual(fs.readdirSync(d).filter((n) => n.startsWith("journal.")), [`journal.${r.snapshotGen}`]);
  }

  for (const d of dirs) {
    const x = await open(t, d);
    assert.deepEqual([get(x.db, "a"), get(x.db, "b"), get(x.db, "c"), get(x.db, "d"), get(x.db, "e")], [1, undefined, undefined, 4, 5]);
    await x.close();
  }
  const again = await recoverMeta(schema, dirs, capture().log);
  assert.equal(again.intact, true);
});

test("recover leaves a torn tail to start-up and says so", async (t) => {
  const dir = tempDir(t);
  const s = await open(t, dir);
  for (let i = 0; i < 3; i++) await s.commit({ k: `k${i}`, v: i }).durable;
  await s.close();
  fs.appendFileSync(path.join(dir, "journal.1"), Buffer.from([0xc1, 0x4a, 0x52]));
  const r = await recoverMeta(schema, [dir], capture().log);
  assert.equal(r.intact, true);
  assert.match(formatRecoverReport(r), /torn tail of .*journal\.1 at byte \d+ .* is cut when the directory starts; nothing to recover/);
  const x = await open(t, dir);
  assert.equal(count(x.db), 3);
});
