import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import type { FileInfo } from "../src/protocol/directory.js";
import { DfsError } from "../src/protocol/errors.js";
import { DfsClient } from "../src/roles/client.js";
import { connect } from "../src/transport/connect.js";
import { forEachBackend } from "./helpers/backends.js";
import { tmpDir, startCluster, type Cluster } from "./helpers/cluster.js";

function clientOf(t: TestContext, c: Cluster): DfsClient {
  const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(tmpDir(t), "cache"), log: logger("client") });
  t.after(() => client.close());
  return client;
}

const bytes = (s: string) => [Buffer.from(s)];

async function refused(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof DfsError, String(err));
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    assert.doesNotMatch(err.message, /\n/);
    return true;
  });
}

forEachBackend((metadata) => {
  test("a version keeps its meta: lookup and list (when asked) return it, the next version replaces it, mv keeps it, rm drops it, restarts keep it", async (t) => {
    // Snapshots often, so that the restart below reads meta from a snapshot as well as from the journal.
    const c = await startCluster(t, { metadata, storage: 2, directoryArgs: metadata === "sqlite" ? ["--snapshot-every", "3"] : [] });
    const client = clientOf(t, c);
    await client.connect();

    const first = { "content-type": "text/plain", "x-amz-meta-colour": "blue", "ünï": "cödé ✓", empty: "" };
    await client.write("/m/a", bytes("a one"), { meta: first });
    await client.write("/m/plain", bytes("no meta"));
    assert.deepEqual((await client.stat("/m/a")).meta, first);
    assert.equal("meta" in (await client.stat("/m/plain")), false, "a version without meta has none");

    const plainList = await client.ls("/m/");
    assert.deepEqual(plainList.map((e) => e.path), ["/m/a", "/m/plain"]);
    assert.ok(plainList.every((e) => !("meta" in e)), "a listing carries meta only when asked");
    const metaList = await client.ls("/m/", { meta: true });
    assert.deepEqual(metaList.map((e) => e.meta), [first, undefined]);
    assert.equal("meta" in metaList[1]!, false);

    // The next version replaces the map whole; a version without meta has none, and {} is none.
    await client.write("/m/a", bytes("a two"), { meta: { "content-type": "application/json" } });
    assert.deepEqual((await client.stat("/m/a")).meta, { "content-type": "application/json" });
    await client.write("/m/a", bytes("a three"));
    assert.equal((await client.stat("/m/a")).meta, undefined);
    await client.write("/m/a", bytes("a four"), { meta: {} });
    assert.equal((await client.stat("/m/a")).meta, undefined);
    const fifth = { k: "v5" };
    await client.write("/m/a", bytes("a five"), { meta: fifth });
    assert.equal((await client.stat("/m/a")).version, 5);

    // Under a lock taken with `lock`, and staged in a transaction (a create and a replacement together).
    await client.lock("/m/locked");
    await client.write("/m/locked", bytes("locked"), { meta: { held: "yes" } });
    assert.equal(await client.unlock("/m/locked"), true);
    client.begin();
    await client.write("/m/t1", bytes("t1"), { meta: { tx: "1" } });
    await client.write("/m/plain", bytes("t2"), { meta: { tx: "2" } });
    assert.equal("meta" in (await client.stat("/m/plain")), false, "staged, not yet visible");
    await client.commit();
    assert.deepEqual((await client.stat("/m/t1")).meta, { tx: "1" });
    assert.deepEqual((await client.stat("/m/plain")).meta, { tx: "2" });
    assert.deepEqual((await client.stat("/m/locked")).meta, { held: "yes" });

    // mv keeps the version and its meta; rm drops both, and a new file at the path starts without.
    await client.mv("/m/a", "/m/b");
    const moved = await client.stat("/m/b");
    assert.equal(moved.version, 5);
    assert.deepEqual(moved.meta, fifth);
    await client.write("/m/gone", bytes("gone"), { meta: { soon: "gone" } });
    await client.rm("/m/gone");
    await refused(client.stat("/m/gone"), "NOT_FOUND", /no such file/);
    await client.write("/m/gone", bytes("back"));
    assert.equal("meta" in (await client.stat("/m/gone")), false);

    // The command line: --meta KEY=VALUE (the value may hold '='), shown by stat and stat --json.
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "f"), "from the command line");
    let r = await c.client(["write", "/m/cli", "f", "--meta", "a=1", "--meta", "b==2"], { cwd: work });
    assert.equal(r.code, 0, r.stderr);
    r = await c.client(["stat", "/m/cli", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as FileInfo).meta, { a: "1", b: "=2" });
    r = await c.client(["stat", "/m/cli"]);
    assert.match(r.stdout, /^meta +a="1"\n +b="=2"$/m);
    r = await c.client(["stat", "/m/gone", "--json"]);
    assert.equal("meta" in JSON.parse(r.stdout), false, "stat --json shows meta only when there is some");
    r = await c.client(["write", "/m/cli", "f", "--meta", "novalue"], { cwd: work });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'dfs: --meta takes KEY=VALUE, not "novalue"\n');

    const before = await client.ls("/m/", { meta: true });
    if (metadata === "sqlite") {
      assert.ok(fs.existsSync(path.join(c.root, "directory", "meta", "snapshot.db")), "a snapshot was written");
    }
    await c.directory.kill("SIGKILL");
    await c.startDirectory(Number(new URL(c.dirUrl).port));
    await c.waitUp(2);
    const after = clientOf(t, c);
    await after.connect();
    assert.deepEqual(await after.ls("/m/", { meta: true }), before, "meta survives a restart");
    assert.deepEqual((await after.stat("/m/b")).meta, fifth);
    // And is still replaced after it.
    await after.write("/m/b", bytes("b six"), { meta: { after: "restart" } });
    assert.deepEqual((await after.stat("/m/b")).meta, { after: "restart" });
  });

  test("bad meta is refused with BAD_REQUEST and one line, by the client before uploading and by the directory, and changes nothing", async (t) => {
    const c = await startCluster(t, { metadata, storage: 2 });
    const client = clientOf(t, c);
    await client.connect();
    await client.write("/x", bytes("x"), { meta: { keep: "me" } });
    const x = await client.stat("/x");

    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
    const cases: [unknown, RegExp][] = [
      [many, /^meta has 65 entries; at most 64$/],
      [{ ["k".repeat(129)]: "v" }, /^meta key "k{24}\.\.\." is longer than 128 characters$/],
      [{ big: "v".repeat(8200) }, /^meta takes \d+ bytes as JSON; at most 8192$/],
      [{ n: 1 }, /^meta "n" must be a string, not a number$/],
      [{ n: null }, /^meta "n" must be a string, not null$/],
      [{ n: { deeper: "x" } }, /^meta "n" must be a string, not a map$/],
      [["a", "b"], /^meta must be a map of keys to strings, not a list$/],
      ["text", /^meta must be a map of keys to strings, not a string$/],
      [{ "": "v" }, /^a meta key may not be empty$/],
    ];
    // The client refuses before any byte goes out: the file is not even read.
    let reads = 0;
    const source = () => {
      reads++;
      return bytes("never");
    };
    for (const [meta, message] of cases) {
      await refused(client.write("/x", source, { meta: meta as Record<string, string> }), "BAD_REQUEST", message);
      await refused(client.write("/new", source, { meta: meta as Record<string, string> }), "BAD_REQUEST", message);
    }
    assert.equal(reads, 0);

    // The directory refuses the same in a commit that is otherwise good (the control shows it is).
    const raw = await connect(c.dirUrl, { tls: loadCerts(c.certs, "client"), log: logger("raw") });
    t.after(() => raw.close());
    const file = (meta: unknown) => ({ path: "/x", size: x.size, sha256: x.sha256, chunks: x.chunks.map((ch) => ch.hash), meta });
    for (const [meta, message] of cases) {
      const inner = message.source.replace(/^\^/, "");
      await refused(raw.request("dir.commit", { files: [file(meta)] }), "BAD_REQUEST", new RegExp(`^malformed message: files\\.0\\.meta: ${inner}`));
      // One bad file of several: the whole commit is refused.
      await refused(raw.request("dir.commit", { files: [{ ...file({ fine: "1" }), path: "/other" }, file(meta)] }), "BAD_REQUEST", /files\.1\.meta/);
    }
    await refused(raw.request("dir.list", { prefix: "/", meta: "yes" }), "BAD_REQUEST", /^malformed message: meta: Expected boolean, received string$/);
    const now = await client.stat("/x");
    assert.equal(now.version, x.version, "nothing changed");
    assert.deepEqual(now.meta, { keep: "me" });
    await refused(client.stat("/other"), "NOT_FOUND", /no such file/);
    await refused(client.stat("/new"), "NOT_FOUND", /no such file/);

    const ok = await raw.request<{ versions: { version: number }[] }>("dir.commit", { files: [file({ control: "yes" })] });
    assert.equal(ok.versions[0]!.version, x.version + 1);
    assert.deepEqual((await client.stat("/x")).meta, { control: "yes" });
    // At the bounds exactly: accepted.
    const full: Record<string, string> = Object.fromEntries(Array.from({ length: 63 }, (_, i) => [`k${i}`, ""]));
    full["l".repeat(128)] = "";
    full.k0 = "v".repeat(8192 - Buffer.byteLength(JSON.stringify(full)));
    assert.equal(Buffer.byteLength(JSON.stringify(full)), 8192);
    await client.write("/x", bytes("x"), { meta: full });
    assert.deepEqual((await client.stat("/x")).meta, full);
  });
});
