import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import path from "node:path";
import test, { type TestContext } from "node:test";
import type { FileInfo, StatusReply } from "../src/protocol/directory.js";
import type { S3KeySecret } from "../src/protocol/s3keys.js";
import { ensureDirectorySchema, namespaceHash, schemaVersion, type NamespaceRow } from "../src/metadata/directory-schema.js";
import { migrateDirectory, pgNamespaceHash, sqliteNamespaceHash } from "../src/metadata/migrate-directory.js";
import { openPostgres, type PostgresBackend } from "../src/metadata/postgres.js";
import { logger } from "../src/log.js";
import { openDatabase } from "../src/roles/directory/checkpoint.js";
import { openMetaStore } from "../src/roles/directory/metastore.js";
import { DIRECTORY_SCHEMA, type DirRecord } from "../src/roles/directory/schema.js";
import { run } from "../src/roles/directory/sql.js";
import { runDfs, startCluster, tmpDir, type Cluster, type RunResult } from "./helpers/cluster.js";
import { flip, recordOffsets } from "./helpers/meta.js";
import { startPostgres, type PgServer } from "./helpers/postgres.js";

function open(t: TestContext, url: string): PostgresBackend {
  const db = openPostgres(url);
  t.after(() => db.close());
  return db;
}

function migrate(t: TestContext, from: string, to: string): Promise<RunResult> {
  return runDfs(t, ["metadata", "migrate", "--from", from, "--to", to]);
}

async function ok(r: Promise<RunResult>, what: string): Promise<string> {
  const res = await r;
  assert.equal(res.code, 0, `${what} failed: ${res.stderr}`);
  return res.stdout;
}

/** Whether the database has a `files` table (a refused migration must not even make the tables). */
async function hasTables(pg: PgServer): Promise<boolean> {
  return (await pg.query("SELECT to_regclass('files') IS NOT NULL AS t"))[0]!.t === true;
}

async function dumpFiles(pg: PgServer): Promise<Record<string, unknown>[]> {
  return pg.query("SELECT path, version, size, sha256, chunks, mtime, meta FROM files ORDER BY path");
}

/** Writes, overwrites, removes and renames through a real cluster; answers `stat --json` of every file `ls` lists. */
async function populate(c: Cluster): Promise<FileInfo[]> {
  const write = (remote: string, body: string, ...flags: string[]) => ok(c.client(["write", remote, "-", ...flags], { stdin: body }), `write ${remote}`);
  await write("/docs/a.txt", "first a");
  await write("/docs/a.txt", "second a, longer than the first ".repeat(100));
  await write("/docs/a.txt", "third a ".repeat(400)); // v3, several chunks of 1 KiB
  await write("/docs/b.txt", "b", "--meta", "content-type=text/plain", "--meta", "x-amz-meta-ü=✓");
  await write("/tmp/gone.txt", "to be removed");
  await ok(c.client(["rm", "/tmp/gone.txt"]), "rm");
  await write("/old-name", "renamed ".repeat(200));
  await write("/old-name", "renamed again ".repeat(200));
  await ok(c.client(["mv", "/old-name", "/new-name"]), "mv");
  await write("/é/ünïcode ✓", "non-ASCII names sort by their bytes");
  const listed = (await ok(c.client(["ls"]), "ls")).trim().split("\n").map((l) => /\d{4}-\d\d-\d\dT\S+Z\s+(\/.*)$/.exec(l)?.[1] ?? l);
  assert.deepEqual([...listed].sort(), ["/docs/a.txt", "/docs/b.txt", "/new-name", "/é/ünïcode ✓"].sort());
  const infos: FileInfo[] = [];
  for (const p of listed) infos.push(JSON.parse(await ok(c.client(["stat", p, "--json"]), `stat ${p}`)) as FileInfo);
  return infos;
}

test("migrate copies a stopped directory's metadata into PostgreSQL, checks it, refuses a running directory and a non-empty target; the directory then runs on it", async (t) => {
  const directoryArgs = ["--chunk-size", "1024"];
  const [pg, c] = await Promise.all([startPostgres(t), startCluster(t, { storage: 2, directoryArgs })]);
  const infos = await populate(c);
  const keyArgs = ["--directory", c.dirUrl, "--certs", c.certs];
  const key = JSON.parse(await ok(runDfs(t, ["s3", "keys", "add", "--bucket", "photos", "--json", ...keyArgs]), "s3 keys add")) as S3KeySecret;
  const cluster = (JSON.parse(await ok(c.client(["status", "--json"]), "status")) as StatusReply).directory.clusterId;
  assert.match(cluster, /^[0-9a-f]{32}$/);
  const dataDir = path.join(c.root, "directory");

  // While the directory runs, its folder is locked: refused, nothing made in the database, the directory unharmed.
  const busy = await migrate(t, dataDir, pg.url);
  assert.equal(busy.code, 1);
  assert.match(busy.stderr, /^dfs: metadata folder .* is in use by process \d+/);
  assert.equal(busy.stderr.trim().split("\n").length, 1);
  assert.equal(await hasTables(pg), false);
  assert.equal((JSON.parse(await ok(c.client(["stat", "/docs/a.txt", "--json"]), "stat")) as FileInfo).version, 3);

  await c.directory.kill("SIGTERM");
  assert.equal(c.directory.child.exitCode, 0, c.directory.stderr);
  const out = await ok(migrate(t, dataDir, pg.url), "migrate");
  const expected = namespaceHash(infos.map((f) => [f.path, f.version, f.size, f.sha256, JSON.stringify(f.chunks.map((x) => x.hash)), f.meta ? JSON.stringify(f.meta) : null] as NamespaceRow));
  const chunkCount = Number((await pg.query("SELECT count(*) AS n FROM chunks"))[0]!.n);
  const replicaCount = Number((await pg.query("SELECT count(*) AS n FROM replicas"))[0]!.n);
  assert.equal(out, `migrated 4 files, ${chunkCount} chunks, ${replicaCount} replicas, cluster ${cluster}; namespace hash ${expected} matches\n`);

  const rows = await dumpFiles(pg);
  const want = infos.map((f) => ({ path: f.path, version: f.version, size: f.size, sha256: f.sha256, chunks: f.chunks.map((x) => x.hash), meta: f.meta ?? null }));
  const got = rows.map((r) => ({
    path: r.path, version: Number(r.version), size: Number(r.size), sha256: r.sha256, chunks: JSON.parse(r.chunks as string) as string[],
    meta: r.meta === null ? null : JSON.parse(r.meta as string) as unknown,
  }));
  assert.deepEqual(got.sort((a, b) => (a.path as string).localeCompare(b.path as string)), want.sort((a, b) => a.path.localeCompare(b.path)));
  assert.deepEqual(want.find((f) => f.path === "/new-name")?.version, 2, "a rename keeps the versions");
  assert.deepEqual(want.find((f) => f.path === "/docs/b.txt")?.meta, { "content-type": "text/plain", "x-amz-meta-ü": "✓" });
  assert.deepEqual((await pg.query("SELECT id, secret, buckets, created FROM s3keys")).map((r) => ({ ...r, created: Number(r.created) })), [
    { id: key.id, secret: key.secret, buckets: '["photos"]', created: key.created },
  ]);
  assert.ok(chunkCount >= 6 && replicaCount >= chunkCount, `${chunkCount} chunks, ${replicaCount} replicas`);
  const meta = Object.fromEntries((await pg.query("SELECT key, num, txt FROM meta")).map((r) => [r.key, r.num ?? r.txt]));
  assert.equal(meta.cluster, cluster);
  assert.equal(Number(meta.schema_version), 2);
  assert.equal(Number(meta.files), 4);
  assert.equal(Number(meta.bytes), infos.reduce((n, f) => n + f.size, 0));
  // Every chunk a file names is there with a reference and a replica on a storage node.
  for (const f of infos) {
    for (const ch of f.chunks) {
      const [r] = await pg.query("SELECT refs, (SELECT count(*) FROM replicas WHERE hash = $1) AS copies FROM chunks WHERE hash = $1", [ch.hash]);
      assert.ok(Number(r?.refs) >= 1 && Number(r?.copies) >= 1, `chunk ${ch.hash} of ${f.path}: ${JSON.stringify(r)}`);
    }
  }

  // Once more into the same database: refused, the copy left as it was.
  const again = await migrate(t, dataDir, pg.url);
  assert.equal(again.code, 1);
  assert.match(again.stderr, new RegExp(`^dfs: the metadata database .* already holds the metadata of cluster ${cluster}; .*\\n$`));
  assert.deepEqual(await dumpFiles(pg), rows);
  assert.equal(Number((await pg.query("SELECT count(*) AS n FROM chunks"))[0]!.n), chunkCount);

  // The directory starts again at its address, now on the database: the nodes find it by themselves, every
  // file reads back as it was, and versions go on from where they were.
  directoryArgs.push("--metadata", pg.url);
  await c.startDirectory(Number(new URL(c.dirUrl).port));
  await c.waitUp(2);
  assert.match(c.directory.stderr, /metadata in PostgreSQL/);
  for (const f of infos) {
    const read = await c.client(["cat", f.path]);
    assert.equal(read.code, 0, read.stderr);
    assert.equal(createHash("sha256").update(read.stdout).digest("hex"), f.sha256, `${f.path} reads back`);
  }
  await ok(c.client(["write", "/docs/a.txt", "-"], { stdin: "fourth a" }), "write after the move");
  assert.equal((JSON.parse(await ok(c.client(["stat", "/docs/a.txt", "--json"]), "stat")) as FileInfo).version, 4);
  assert.equal((JSON.parse(await ok(c.client(["status", "--json"]), "status")) as StatusReply).directory.clusterId, cluster);
  const b = JSON.parse(await ok(c.client(["stat", "/docs/b.txt", "--json"]), "stat")) as FileInfo;
  assert.deepEqual(b.meta, { "content-type": "text/plain", "x-amz-meta-ü": "✓" });
  const listed = JSON.parse(await ok(runDfs(t, ["s3", "keys", "list", "--json", ...keyArgs]), "s3 keys list")) as { keys: unknown[] };
  assert.deepEqual(listed.keys, [{ id: key.id, buckets: ["photos"], created: key.created }]);
});

const KEY = { id: `DFS${"A".repeat(17)}`, secret: "s".repeat(40), buckets: ["*"], created: 1_700_000_000_000 };

/** A directory's metadata folder written by the metastore itself: a cluster, a node, six one-chunk files (one with meta) and an S3 key. */
async function writeMeta(dataDir: string): Promise<void> {
  const store = await openMetaStore<DirRecord>({ dirs: [path.join(dataDir, "meta")], ...DIRECTORY_SCHEMA, log: logger("test") });
  try {
    await store.commit({ op: "cluster", id: "00112233445566778899aabbccddeeff" }).durable;
    await store.commit({ op: "node", id: "n1", role: "storage", url: "wss://127.0.0.1:1", zone: "", capacity: null }).durable;
    for (let i = 0; i < 6; i++) {
      const hash = String(i).repeat(64);
      await store.commit({ op: "replicas", node: "n1", add: [{ hash, size: 10 }] }).durable;
      const meta = i === 1 ? { meta: { "content-type": "text/plain" } } : {};
      await store.commit({ op: "commit", files: [{ path: `/f${i}`, size: 10, sha256: hash, chunks: [hash], ...meta }], mtime: 1_700_000_000_000 + i }).durable;
    }
    await store.commit({ op: "s3key", ...KEY }).durable;
  } finally {
    await store.close();
  }
}

test("migrate refuses damaged metadata as start-up does, pointing to recover; after recover it migrates what was kept", async (t) => {
  const pg = await startPostgres(t);
  const dataDir = tmpDir(t, "dfs-migrate-");
  await writeMeta(dataDir);
  const journal = path.join(dataDir, "meta", "journal.1");
  const recs = recordOffsets(journal);
  assert.equal(recs.length, 15);
  const victim = recs[7]!; // the commit of /f2, with intact records after it
  flip(journal, Math.floor((victim.offset + victim.end) / 2));

  const r = await migrate(t, dataDir, pg.url);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^dfs: journal .*journal\\.1 is damaged at byte ${victim.offset} \\(.*\\) and records written after it are intact, so this is not a torn write; dfs does not migrate damaged metadata: run \`dfs directory recover --data ${dataDir}\` first`));
  assert.equal(r.stderr.trim().split("\n").length, 1);
  assert.equal(await hasTables(pg), false);

  await ok(runDfs(t, ["directory", "recover", "--data", dataDir]), "recover");
  const done = await migrate(t, dataDir, pg.url);
  assert.equal(done.code, 0, done.stderr);
  assert.equal(done.stderr, "", "a short migration prints nothing but its summary");
  assert.match(done.stdout, /^migrated 5 files, 6 chunks, 6 replicas, cluster 00112233445566778899aabbccddeeff; namespace hash [0-9a-f]{64} matches\n$/);
  assert.deepEqual((await dumpFiles(pg)).map((f) => f.path), ["/f0", "/f1", "/f3", "/f4", "/f5"]);
});

test("migrate copies in batches with progress lines, and refuses a copy that was cut short", async (t) => {
  const server = await startPostgres(t);
  const dataDir = tmpDir(t, "dfs-migrate-");
  await writeMeta(dataDir);
  const pg = open(t, server.url);
  await pg.transact((tx) => ensureDirectorySchema(tx));
  await pg.transact((tx) => tx.run("INSERT INTO files VALUES('/half', 1, 1, 'aa', '[]', 0)"));
  const opts = { dirs: [path.join(dataDir, "meta")], url: server.url, recoverHint: "dfs directory recover --data x" };
  await assert.rejects(migrateDirectory(opts), (err: Error & { code?: string }) => {
    assert.equal(err.code, "EXISTS");
    assert.match(err.message, /already holds rows in files but no cluster id \(a migration cut short\? drop those tables and run it again\)/);
    return true;
  });

  await server.query("DROP TABLE files, chunks, replicas, nodes, leases, tombstones, s3keys, meta");
  const lines: string[] = [];
  const report = await migrateDirectory({ ...opts, batchRows: 2, progress: (l) => lines.push(l), progressEveryMs: 0 });
  assert.deepEqual(report.rows, { files: 6, chunks: 6, replicas: 6, nodes: 1, leases: 0, tombstones: 0, s3keys: 1, meta: 4 });
  assert.equal(report.cluster, "00112233445566778899aabbccddeeff");
  assert.deepEqual(lines.at(-1), "copied 24 of 24 rows (meta)");
  assert.equal(lines.length, 13); // three batches for each of files, chunks and replicas, one each for nodes and s3keys, two for meta
  const files = await dumpFiles(server);
  assert.deepEqual(files.map((f) => f.path), ["/f0", "/f1", "/f2", "/f3", "/f4", "/f5"]);
  assert.deepEqual(files.map((f) => f.meta), [null, '{"content-type":"text/plain"}', null, null, null, null]);
  assert.deepEqual((await server.query("SELECT id, secret, buckets, created FROM s3keys")).map((r) => [r.id, r.secret, r.buckets, Number(r.created)]), [
    [KEY.id, KEY.secret, '["*"]', KEY.created],
  ]);
  const meta = await server.query("SELECT key, num, txt FROM meta ORDER BY key");
  assert.deepEqual(meta.map((r) => [r.key, r.num === null ? null : Number(r.num), r.txt]), [
    ["bytes", 60, null], ["chunks", 6, null], ["cluster", null, "00112233445566778899aabbccddeeff"], ["files", 6, null], ["schema_version", 2, null],
  ]);
});

test("a copy that differs from the source fails the check", async (t) => {
  const server = await startPostgres(t);
  const dataDir = tmpDir(t, "dfs-migrate-");
  await writeMeta(dataDir);
  // The database itself skews what it is given, as a faulty copy would: the check must see it.
  const skews = {
    version: ["files", "IF NEW.path = '/f3' THEN NEW.version := NEW.version + 1; END IF; RETURN NEW;", /namespace hash [0-9a-f]{64}, the source [0-9a-f]{64}$/],
    replica: ["replicas", "IF NEW.hash LIKE '4%' THEN RETURN NULL; END IF; RETURN NEW;", /replicas has 5 rows, the source 6$/],
    cluster: ["meta", "IF NEW.key = 'cluster' THEN NEW.txt := 'ffff'; END IF; RETURN NEW;", /meta holds .*"ffff".*, the source /],
    meta: ["files", "IF NEW.path = '/f1' THEN NEW.meta := '{\"content-type\":\"text/html\"}'; END IF; RETURN NEW;", /namespace hash [0-9a-f]{64}, the source [0-9a-f]{64}$/],
    keys: ["s3keys", "NEW.secret := 'x' || NEW.secret; RETURN NEW;", /the S3 access keys differ \(DFSA{17}; the source DFSA{17}\)$/],
  } as const;
  for (const [name, [table, body, said]] of Object.entries(skews)) {
    await server.query(`CREATE DATABASE skew_${name}`);
    const url = server.url.replace(/\/postgres$/, `/skew_${name}`);
    const pg = open(t, url);
    await pg.transact((tx) => ensureDirectorySchema(tx));
    await pg.transact(async (tx) => {
      await tx.run(`CREATE FUNCTION skew() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN ${body} END $$`);
      await tx.run(`CREATE TRIGGER skew BEFORE INSERT ON ${table} FOR EACH ROW EXECUTE FUNCTION skew()`);
    });
    const r = await migrate(t, dataDir, url);
    assert.equal(r.code, 1, `${name}: ${r.stdout}`);
    assert.match(r.stderr, /^dfs: the copy in postgres:\/\/\S+ does not match the source: /, name);
    assert.match(r.stderr.trim(), said, name);
    assert.equal(r.stdout, "", name);
    assert.ok(!r.stderr.includes(KEY.secret), `${name}: no secret in the message`);
  }
});

test("the namespace hash is the same over sql.js and PostgreSQL for the same rows, and differs when one row does", async (t) => {
  const server = await startPostgres(t);
  const pg = open(t, server.url);
  await pg.transact((tx) => ensureDirectorySchema(tx));
  await pg.transact((tx) => ensureDirectorySchema(tx)); // idempotent
  assert.equal(await pg.transact((tx) => schemaVersion(tx)), 2);

  const rows: NamespaceRow[] = [
    ["/z", 1, 0, "e3b0", "[]"],
    ["/a/b", 7, 5, "aa", '["h1","h2"]'],
    ["/\u{1F600}", 2, 3, "bb", '["h3"]'], // beyond U+FFFF: UTF-16 order would put it before U+FFFD
    ["/\uFFFD", 1, 1, "cc", '["h4"]'],
    ["/é", 3, 2 ** 40, "dd", '["h5"]'],
    ["/A", 1, 1, "ee", '["h6"]'], // upper case sorts before lower case byte by byte, not in most locales
    ["/m", 1, 1, "ff", '["h7"]', '{"content-type":"text/plain","ü":"✓"}'],
  ];
  const db = await openDatabase(undefined, DIRECTORY_SCHEMA);
  t.after(() => db.close());
  const withMeta = (r: NamespaceRow) => [r[0], r[1], r[2], r[3], r[4], r[5] ?? null];
  for (const r of [...rows].reverse()) run(db, "INSERT INTO files(path, version, size, sha256, chunks, mtime, meta) VALUES(?,?,?,?,?,0,?)", withMeta(r));
  await pg.transact(async (tx) => {
    for (const r of rows) await tx.run("INSERT INTO files(path, version, size, sha256, chunks, meta, mtime) VALUES(?,?,?,?,?,?,?)", [...withMeta(r), 0]);
  });

  const fromSqlite = sqliteNamespaceHash(db);
  assert.equal(fromSqlite, namespaceHash(rows));
  assert.equal(await pgNamespaceHash(pg, 2), fromSqlite); // pages of two rows: paging loses and repeats nothing
  assert.equal(await pgNamespaceHash(pg), fromSqlite);
  assert.notEqual(namespaceHash([]), fromSqlite);

  await pg.transact((tx) => tx.run("UPDATE files SET version = version + 1 WHERE path = ?", ["/é"]));
  assert.notEqual(await pgNamespaceHash(pg), fromSqlite);
  await pg.transact((tx) => tx.run("UPDATE files SET version = version - 1, chunks = ? WHERE path = ?", ['["h5","h5"]', "/é"]));
  assert.notEqual(await pgNamespaceHash(pg), fromSqlite);
  await pg.transact((tx) => tx.run("UPDATE files SET chunks = ? WHERE path = ?", ['["h5"]', "/é"]));
  assert.equal(await pgNamespaceHash(pg), fromSqlite);
  // A version's metadata counts; a version without any hashes as before metadata existed.
  await pg.transact((tx) => tx.run("UPDATE files SET meta = ? WHERE path = ?", ['{"content-type":"text/html","ü":"✓"}', "/m"]));
  assert.notEqual(await pgNamespaceHash(pg), fromSqlite);
  await pg.transact((tx) => tx.run("UPDATE files SET meta = NULL WHERE path = ?", ["/m"]));
  assert.equal(await pgNamespaceHash(pg), namespaceHash(rows.map((r) => r.slice(0, 5) as NamespaceRow)));
});
