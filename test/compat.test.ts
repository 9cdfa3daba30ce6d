import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import test, { type TestContext } from "node:test";
import postgres from "postgres";
import { loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import { DfsClient } from "../src/roles/client.js";
import { forEachBackend } from "./helpers/backends.js";
import { Cluster, ROOT, tmpDir } from "./helpers/cluster.js";

/** Metadata and storage folders written by dfs before files carried meta and the directory kept S3 keys (see its README). */
const FIXTURE = path.join(ROOT, "test/fixtures/before-meta");

/** What the fixture's cluster was given, as its README's commands wrote it. */
const FILES: Record<string, { version: number; text: string }> = {
  "/docs/a.txt": { version: 2, text: "second a, longer than one chunk\n".repeat(100).slice(0, 3000) },
  "/docs/b.txt": { version: 1, text: "b" },
  "/new-name": { version: 1, text: "renamed\n".repeat(200).slice(0, 1500) },
  "/é/ünïcode ✓": { version: 1, text: "non-ASCII names sort by their bytes" },
};

async function text(c: DfsClient, remote: string): Promise<string> {
  const parts: Buffer[] = [];
  await c.read(remote, async (d) => void parts.push(d));
  return Buffer.concat(parts).toString();
}

/** Runs SQL text (several statements, no parameters) on a connection of its own. */
async function pgRun(url: string, text: string): Promise<Record<string, unknown>[]> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return [...(await sql.unsafe(text))];
  } finally {
    await sql.end({ timeout: 1 });
  }
}

const layout = async (url: string) => (await pgRun(url, "SELECT num FROM meta WHERE key = 'schema_version'")).map((r) => Number(r.num));

function clientOf(t: TestContext, c: Cluster): DfsClient {
  const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(tmpDir(t), "cache"), log: logger("client") });
  t.after(() => client.close());
  return client;
}

/** Every file reads back as the old cluster wrote it, at its version, without meta. */
async function oldFilesIntact(client: DfsClient): Promise<void> {
  for (const [remote, want] of Object.entries(FILES)) {
    const info = await client.stat(remote);
    assert.equal(info.version, want.version, remote);
    assert.equal("meta" in info, false, remote);
    assert.equal(await text(client, remote), want.text, remote);
  }
}

forEachBackend((metadata) => {
  test("a directory on metadata written before file meta and S3 keys existed opens, serves it, and then keeps meta and keys", async (t) => {
    const c = new Cluster(t, { metadata, storage: 2, directoryArgs: ["--chunk-size", "1024"] });
    const from = path.join(FIXTURE, metadata);
    for (const name of ["storage-0", "storage-1"]) fs.cpSync(path.join(from, name), path.join(c.root, name), { recursive: true });
    let url: string | undefined;
    if (metadata === "sqlite") {
      fs.cpSync(path.join(from, "directory"), path.join(c.root, "directory"), { recursive: true });
      const snapshot = fs.readFileSync(path.join(c.root, "directory", "meta", "snapshot.db"));
      assert.ok(!snapshot.includes("s3keys") && !snapshot.includes("mtime INTEGER NOT NULL, meta"), "the fixture is of the old layout");
    } else {
      url = (await c.metadata())!;
      await pgRun(url, fs.readFileSync(path.join(from, "dump.sql"), "utf8"));
      assert.deepEqual(await layout(url), [1]);
    }
    await c.start();

    const client = clientOf(t, c);
    await client.connect();
    assert.deepEqual((await client.ls("/")).map((e) => [e.path, e.version]), Object.entries(FILES).map(([p, f]) => [p, f.version]));
    await oldFilesIntact(client);

    // Then it stores what is new: meta on a new version of an old file and on a new file, and keys.
    await client.write("/docs/a.txt", [Buffer.from("third a")], { meta: { "content-type": "text/plain" } });
    await client.write("/docs/c.txt", [Buffer.from("c")], { meta: { colour: "green" } });
    await client.mv("/docs/b.txt", "/docs/b2.txt");
    const key = await client.s3Keys.add(["photos"]);
    const listed = await client.ls("/docs/", { meta: true });
    assert.deepEqual(listed.map((e) => [e.path, e.version, e.meta]), [
      ["/docs/a.txt", 3, { "content-type": "text/plain" }], ["/docs/b2.txt", 1, undefined], ["/docs/c.txt", 1, { colour: "green" }],
    ]);

    if (url) assert.deepEqual(await layout(url), [2], "the layout was upgraded");

    await c.directory.kill("SIGKILL");
    await c.startDirectory(Number(new URL(c.dirUrl).port));
    await c.waitUp(2);
    const after = clientOf(t, c);
    await after.connect();
    assert.deepEqual(await after.ls("/docs/", { meta: true }), listed);
    assert.deepEqual(await after.s3Keys.get(key.id), key);
    assert.equal(await text(after, "/docs/a.txt"), "third a");
    assert.equal(await text(after, "/docs/b2.txt"), "b");
    assert.equal(await text(after, "/new-name"), FILES["/new-name"]!.text);
  });
});
