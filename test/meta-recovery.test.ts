import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { DfsClient } from "../src/roles/client.js";
import { logger } from "../src/log.js";
import { openMetaStore } from "../src/roles/directory/metastore.js";
import { DIRECTORY_SCHEMA, type DirRecord } from "../src/roles/directory/schema.js";
import { decodePayload, scanJournal } from "../src/roles/directory/journal-format.js";
import { runDfs, spawnDfs, startCluster, tmpDir, type Cluster } from "./helpers/cluster.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function clientOf(t: test.TestContext, c: Cluster): DfsClient {
  const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(tmpDir(t), "cache"), log: logger("test") });
  t.after(() => client.close());
  return client;
}

/** Writes `n` small files and returns what each holds. */
async function writeFiles(client: DfsClient, n: number, prefix = "/f"): Promise<Map<string, string>> {
  const acked = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const data = randomBytes(500 + i * 37);
    await client.write(`${prefix}/${i}`, [data]);
    acked.set(`${prefix}/${i}`, sha(data));
  }
  return acked;
}

/** Which acknowledged files are missing or hold something else now. */
async function damagedFiles(client: DfsClient, acked: Map<string, string>): Promise<string[]> {
  const bad: string[] = [];
  for (const [p, hash] of acked) {
    const info = await client.stat(p).catch(() => undefined);
    if (info?.sha256 !== hash) bad.push(p);
  }
  return bad;
}

/** Flips three bytes a few apart around `at` (a fraction of the file, or a byte offset), as a bad sector would. */
function rot(file: string, at = 0.5): number {
  const buf = fs.readFileSync(file);
  const mid = at < 1 ? Math.floor(buf.length * at) : at;
  for (const d of [0, 5, 11]) buf[mid + d]! ^= 0x5a;
  fs.writeFileSync(file, buf);
  return mid;
}

/** The commit record nearest the middle of a journal, and the path it commits. */
function middleCommit(file: string): { offset: number; path: string } {
  const recs = scanJournal(fs.readFileSync(file)).records;
  const commits = recs.map((r) => ({ r, rec: decodePayload<DirRecord>(r.payload) })).filter((x) => x.rec.op === "commit");
  const { r, rec } = commits[Math.floor(commits.length / 2)]!;
  return { offset: r.offset, path: (rec as Extract<DirRecord, { op: "commit" }>).files[0]!.path };
}

const directoryArgs = (c: Cluster, extra: string[] = []) => [
  "--role", "directory", "--port", "0", "--data", path.join(c.root, "directory"), "--certs", c.certs, "--dead-after", "3", ...extra,
];

test("rot in the middle of the journal: the directory refuses to start, recover keeps what applies and names what is lost", { timeout: 240_000 }, async (t) => {
  const c = await startCluster(t, { storage: 3 });
  const client = clientOf(t, c);
  const acked = await writeFiles(client, 40);
  const port = Number(new URL(c.dirUrl).port);
  await c.directory.kill("SIGKILL");

  const meta = path.join(c.root, "directory", "meta");
  const journal = path.join(meta, "journal.1");
  const hit = middleCommit(journal);
  rot(journal, hit.offset + 30); // inside the payload of a commit record, with valid records after it
  const damaged = fs.readFileSync(journal);

  const refusedStart = spawnDfs(t, directoryArgs(c));
  assert.notEqual(await refusedStart.exited, 0);
  const why = refusedStart.stderr.trim().split("\n").at(-1)!;
  assert.match(why, new RegExp(`^dfs: journal ${journal} is damaged at byte \\d+ .*run \`dfs directory recover --data ${path.join(c.root, "directory")}\``));
  assert.deepEqual(fs.readFileSync(journal), damaged, "the failed start changed nothing");

  const r = await runDfs(t, ["directory", "recover", "--data", path.join(c.root, "directory")]);
  assert.equal(r.code, 0, r.stderr);
  t.diagnostic(r.stdout);
  assert.match(r.stdout, new RegExp(`damaged ${journal} bytes ${hit.offset}-\\d+ \\(payload crc mismatch\\)`));
  assert.match(r.stdout, new RegExp(`^lost ${hit.path}$`, "m"));
  assert.match(r.stdout, /^recovered: snapshot generation 2 written/m);
  const listed = new Set([...r.stdout.matchAll(/^(?:lost|changed) (\S+)$/gm)].map((m) => m[1]!));
  const aside = fs.readdirSync(meta).filter((n) => n.startsWith("damaged-"));
  assert.equal(aside.length, 1);
  assert.deepEqual(fs.readFileSync(path.join(meta, aside[0]!, "journal.1")), damaged, "the damaged original is kept");

  await c.startDirectory(port);
  await c.waitUp(3);
  const lost = await damagedFiles(client, acked);
  for (const p of lost) assert.ok(listed.has(p), `${p} is lost but recover did not name it:\n${r.stdout}`);
  assert.ok(lost.includes(hit.path), "the damaged commit's file is gone");
  assert.ok(lost.length <= 3, `three flipped bytes lost ${lost.length} of 40 files:\n${r.stdout}`);
  const survivor = [...acked.keys()].find((p) => !lost.includes(p))!;
  const parts: Buffer[] = [];
  await client.read(survivor, async (d) => void parts.push(d));
  assert.equal(sha(Buffer.concat(parts)), acked.get(survivor));

  // While the directory runs, its folder is not for recover.
  const busy = await runDfs(t, ["directory", "recover", "--data", path.join(c.root, "directory")]);
  assert.equal(busy.code, 1);
  assert.match(busy.stderr, /in use by process \d+/);
});

test("recover says so and exits non-zero when nothing can be rebuilt, and leaves intact metadata alone", async (t) => {
  const intact = tmpDir(t);
  const store = await openMetaStore<DirRecord>({ dirs: [path.join(intact, "meta")], ...DIRECTORY_SCHEMA, log: logger("test") });
  await store.commit({ op: "node", id: "n1", role: "storage", url: "wss://127.0.0.1:1", zone: "", capacity: null }).durable;
  await store.close();
  const before = fs.readdirSync(path.join(intact, "meta")).sort();
  const same = await runDfs(t, ["directory", "recover", "--data", intact]);
  assert.equal(same.code, 0, same.stderr);
  assert.match(same.stdout, /is intact \(no snapshot yet\); nothing to recover/);
  assert.deepEqual(fs.readdirSync(path.join(intact, "meta")).sort(), before);

  const dir = tmpDir(t);
  fs.mkdirSync(path.join(dir, "meta"));
  fs.writeFileSync(path.join(dir, "meta", "snapshot.db"), Buffer.from("DFSSNAP1 and then nothing useful"));
  const bad = await runDfs(t, ["directory", "recover", "--data", dir]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^dfs: snapshot .*snapshot\.db is damaged/);

  const fresh = tmpDir(t);
  const ok = await runDfs(t, ["directory", "recover", "--data", fresh]);
  assert.equal(ok.code, 1, "no metadata folder at all");
  assert.match(ok.stderr, /^dfs: no metadata folder .*meta; nothing to recover/);
});

test("two metadata folders: one damaged in the middle, then both at different places; the directory serves every acknowledged file", { timeout: 240_000 }, async (t) => {
  const second = path.join(tmpDir(t, "dfs-disk2-"), "meta");
  const c = await startCluster(t, { storage: 3, directoryArgs: ["--meta-dir", second] });
  const client = clientOf(t, c);
  const acked = await writeFiles(client, 30);
  const port = Number(new URL(c.dirUrl).port);
  await c.directory.kill("SIGKILL");
  const first = path.join(c.root, "directory", "meta");
  assert.deepEqual(fs.readFileSync(path.join(first, "journal.1")), fs.readFileSync(path.join(second, "journal.1")));

  rot(path.join(first, "journal.1"));
  await c.startDirectory(port);
  assert.match(c.directory.stderr, /journal-copy-repaired file=\S+journal\.1/);
  await c.waitUp(3);
  assert.deepEqual(await damagedFiles(client, acked), []);
  for (const [p, h] of await writeFiles(client, 5, "/g")) acked.set(p, h);

  await c.directory.kill("SIGKILL");
  rot(path.join(first, "journal.1"), 0.3);
  rot(path.join(second, "journal.1"), 0.7);
  await c.startDirectory(port);
  await c.waitUp(3);
  assert.deepEqual(await damagedFiles(client, acked), []);
});
