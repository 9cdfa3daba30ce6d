import assert from "node:assert/strict";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import { DfsError } from "../src/protocol/errors.js";
import { bucketNameProblem, type S3KeyInfo, type S3KeySecret } from "../src/protocol/s3keys.js";
import { DfsClient } from "../src/roles/client.js";
import { connect } from "../src/transport/connect.js";
import { forEachBackend } from "./helpers/backends.js";
import { runDfs, startCluster, tmpDir, type Cluster, type RunResult } from "./helpers/cluster.js";

function clientOf(t: TestContext, c: Cluster): DfsClient {
  const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(tmpDir(t), "cache"), log: logger("client") });
  t.after(() => client.close());
  return client;
}

/** `dfs s3 keys ...` with the cluster's connection options after the command, as people type them. */
function keys(t: TestContext, c: Cluster, args: string[], opts: { name?: string } = {}): Promise<RunResult> {
  return runDfs(t, ["s3", "keys", ...args, "--directory", c.dirUrl, "--certs", c.certs, ...(opts.name ? ["--name", opts.name] : [])]);
}

function ok(r: RunResult, what: string): string {
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
  return r.stdout;
}

function failsWith(r: RunResult, line: RegExp): void {
  assert.equal(r.code, 1, r.stdout);
  assert.equal(r.stdout, "");
  assert.equal(r.stderr.split("\n").length, 2, `one line: ${r.stderr}`);
  assert.match(r.stderr, line);
}

const ID = /^DFS[A-Z0-9]{17}$/;
const SECRET = /^[A-Za-z0-9+/]{40}$/;

test("bucket names follow S3's rules", () => {
  for (const good of ["abc", "photos", "my-bucket.2024", "a".repeat(63), "0-9", "1.2.3"]) assert.equal(bucketNameProblem(good), undefined, good);
  const bad: [string, RegExp][] = [
    ["ab", /3 to 63 characters/], ["a".repeat(64), /3 to 63 characters/], ["Photos", /lowercase letters, digits, dots and hyphens/],
    ["my_bucket", /lowercase/], ["-abc", /start and end with a letter or digit/], ["abc.", /start and end/],
    ["a..b", /two dots in a row/], ["192.168.1.1", /IP address/], ["*xyz", /lowercase/],
  ];
  for (const [name, why] of bad) assert.match(bucketNameProblem(name) ?? "", why, name);
});

forEachBackend((metadata) => {
  test("S3 keys: add, list, get and remove through the command line and the client; secrets never listed; kept across a restart", async (t) => {
    const c = await startCluster(t, { metadata, storage: 1 });
    const client = clientOf(t, c);
    await client.connect();

    // Human form: the id and the secret, once, with a note on stderr.
    const added = await keys(t, c, ["add", "--bucket", "photos", "--bucket", "logs", "--bucket", "photos"]);
    const lines = ok(added, "add").trimEnd().split("\n");
    assert.equal(lines.length, 3);
    const id = /^id +(\S+)$/.exec(lines[0]!)?.[1] ?? "";
    const secret = /^secret +(\S+)$/.exec(lines[1]!)?.[1] ?? "";
    assert.match(id, ID);
    assert.match(secret, SECRET);
    assert.equal(lines[2], "buckets  logs photos");
    assert.match(added.stderr, /the secret is shown only now/);

    // JSON, and no --bucket: every bucket. Options before `s3` are taken too, and the environment.
    const all = JSON.parse(ok(await runDfs(t, ["--directory", c.dirUrl, "--certs", c.certs, "s3", "keys", "add", "--json"]), "add --json")) as S3KeySecret;
    assert.match(all.id, ID);
    assert.match(all.secret, SECRET);
    assert.deepEqual(all.buckets, ["*"]);
    assert.ok(Math.abs(all.created - Date.now()) < 60_000);
    const fromClient = await client.s3Keys.add(["zeta", "alpha"]);
    assert.deepEqual(fromClient.buckets, ["alpha", "zeta"]);
    assert.notEqual(fromClient.secret, all.secret);

    const listed = await runDfs(t, ["s3", "keys", "list", "--json"], { env: { DFS_DIRECTORY: c.dirUrl, DFS_CERTS: c.certs } });
    const list = (JSON.parse(ok(listed, "list --json")) as { keys: S3KeyInfo[] }).keys;
    assert.deepEqual(list.map((k) => k.id), [id, all.id, fromClient.id], "oldest first");
    assert.deepEqual(list[0], { id, buckets: ["logs", "photos"], created: list[0]!.created });
    for (const s of [secret, all.secret, fromClient.secret]) assert.ok(!listed.stdout.includes(s), "list never shows a secret");
    assert.deepEqual(await client.s3Keys.list(), list);
    const human = ok(await keys(t, c, ["list"]), "list");
    assert.match(human, /^ID +CREATED +BUCKETS\n/);
    assert.match(human, new RegExp(`^${id}  \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ  logs photos$`, "m"));
    assert.match(human, new RegExp(`^${all.id} .* \\*$`, "m"));
    for (const s of [secret, all.secret, fromClient.secret]) assert.ok(!human.includes(s));

    assert.deepEqual(await client.s3Keys.get(id), { id, secret, buckets: ["logs", "photos"], created: list[0]!.created });

    // Remove: gone for get and list; again is NOT_FOUND, one line.
    assert.equal(ok(await keys(t, c, ["remove", fromClient.id]), "remove"), `removed S3 access key ${fromClient.id}\n`);
    await assert.rejects(client.s3Keys.get(fromClient.id), (e: DfsError) => e.code === "NOT_FOUND" && e.message === `no S3 access key ${fromClient.id}`);
    failsWith(await keys(t, c, ["remove", fromClient.id]), new RegExp(`^dfs: no S3 access key ${fromClient.id}\\n$`));
    await assert.rejects(client.s3Keys.remove("DFS00000000000000000"), { code: "NOT_FOUND" });
    failsWith(await keys(t, c, ["remove", "not-a-key"]), /^dfs: malformed message: id: must be an access key id: 20 capital letters and digits\n$/);
    assert.deepEqual((await client.s3Keys.list()).map((k) => k.id), [id, all.id]);

    await c.directory.kill("SIGKILL");
    await c.startDirectory(Number(new URL(c.dirUrl).port));
    const after = clientOf(t, c);
    await after.connect();
    assert.deepEqual(await after.s3Keys.list(), list.slice(0, 2), "kept across a restart");
    assert.equal((await after.s3Keys.get(all.id)).secret, all.secret);
    await assert.rejects(after.s3Keys.get(fromClient.id), { code: "NOT_FOUND" });
  });

  test("S3 keys: bad bucket names and bodies are refused with one line and add nothing; other roles' certificates are FORBIDDEN", async (t) => {
    const c = await startCluster(t, { metadata, storage: 1 });
    const client = clientOf(t, c);
    await client.connect();
    const kept = await client.s3Keys.add(["kept"]);

    const refusals: [string[], RegExp][] = [
      [["--bucket", "Photos"], /^dfs: malformed message: buckets: bucket name "Photos" may hold only lowercase letters, digits, dots and hyphens\n$/],
      [["--bucket", "ok-name", "--bucket", "192.168.1.1"], /^dfs: malformed message: buckets: bucket name "192\.168\.1\.1" may not look like an IP address\n$/],
      [["--bucket", "ab"], /must be 3 to 63 characters long\n$/],
      [["--bucket", "*", "--bucket", "photos"], /^dfs: malformed message: buckets: \* \(every bucket\) stands alone, without bucket names\n$/],
      [["--bucket", ""], /must be 3 to 63 characters long\n$/],
    ];
    for (const [args, line] of refusals) failsWith(await keys(t, c, ["add", ...args]), line);

    const raw = await connect(c.dirUrl, { tls: loadCerts(c.certs, "client"), log: logger("raw") });
    t.after(() => raw.close());
    const bad: [string, unknown, RegExp][] = [
      ["dir.s3key.add", { buckets: [] }, /^malformed message: buckets: name at least one bucket, or \* for all$/],
      ["dir.s3key.add", { buckets: "photos" }, /^malformed message: buckets: buckets must be a list of bucket names$/],
      ["dir.s3key.add", { buckets: [7] }, /^malformed message: buckets\.0: Expected string, received number$/],
      ["dir.s3key.add", {}, /^malformed message: buckets: Required$/],
      ["dir.s3key.add", { buckets: Array.from({ length: 1001 }, (_, i) => `b-${i}`) }, /at most 1000 buckets per key$/],
      ["dir.s3key.get", { id: 12 }, /^malformed message: id: Expected string, received number$/],
      ["dir.s3key.get", { id: "dfs00000000000000000" }, /must be an access key id/],
      ["dir.s3key.remove", { id: kept.id + "X" }, /must be an access key id/],
      ["dir.s3key.list", null, /^malformed message: Expected object, received null$/],
    ];
    for (const [type, body, message] of bad) {
      await assert.rejects(raw.request(type, body), (e: DfsError) => {
        assert.equal(e.code, "BAD_REQUEST", `${type} ${JSON.stringify(body)}: ${e.message}`);
        assert.match(e.message, message);
        return true;
      });
    }
    assert.deepEqual((await client.s3Keys.list()).map((k) => k.id), [kept.id], "nothing was added or removed");

    // A storage or lock certificate may not touch keys, not even to read one; the directory goes on serving.
    failsWith(await keys(t, c, ["add"], { name: "storage" }), /^dfs: a storage certificate may not send dir\.s3key\.add\n$/);
    failsWith(await keys(t, c, ["list"], { name: "lock" }), /^dfs: a lock certificate may not send dir\.s3key\.list\n$/);
    for (const role of ["storage", "lock"]) {
      const other = await connect(c.dirUrl, { tls: loadCerts(c.certs, role), log: logger(role) });
      t.after(() => other.close());
      for (const [type, body] of [["dir.s3key.get", { id: kept.id }], ["dir.s3key.list", {}], ["dir.s3key.remove", { id: kept.id }], ["dir.s3key.add", { buckets: ["*"] }]] as const) {
        await assert.rejects(other.request(type, body), (e: DfsError) => e.code === "FORBIDDEN" && e.message === `a ${role} certificate may not send ${type}`);
      }
    }
    assert.deepEqual(await client.s3Keys.get(kept.id), kept);
    assert.deepEqual((await client.s3Keys.list()).map((k) => k.id), [kept.id]);
  });
});
