// The S3 gateway driven by real command-line clients: Debian's rclone (Go, the AWS SDK for Go) and AWS CLI
// (Python, botocore), over HTTPS with the cluster's CA, as a user would run them.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { HeadBucketCommand, HeadObjectCommand, S3ServiceException } from "@aws-sdk/client-s3";
import { spawnChild, startCluster, tmpDir, type Cluster, type RunResult } from "./helpers/cluster.js";
import { addKey, s3Client, startGateway, type S3Key } from "./helpers/s3.js";

// By full path: an `aws` earlier on PATH (a user's own install, a version manager's shim) is not the one tested.
const RCLONE = "/usr/bin/rclone";
const AWS = "/usr/bin/aws";
const MiB = 1024 * 1024;

function requireTools(): void {
  const missing = [RCLONE, AWS].filter((p) => !fs.existsSync(p));
  if (missing.length > 0) throw new Error(`${missing.join(" and ")} not installed: run 'bash scripts/ensure-packages.sh rclone=/usr/bin/rclone awscli=/usr/bin/aws' (as root) to install Debian's rclone and awscli`);
}

/** Runs a program to completion with exactly `env` (none of this process's), killed at the deadline. */
async function run(t: TestContext, cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 180_000): Promise<RunResult> {
  const p = spawnChild(t, cmd, args, { env });
  p.child.stdin?.end();
  const timer = setTimeout(() => p.child.kill("SIGKILL"), timeoutMs);
  const code = await p.exited;
  clearTimeout(timer);
  return { code, stdout: p.stdout, stderr: p.stderr };
}

function ok(r: RunResult, what: string): string {
  assert.equal(r.code, 0, `${what} exited with ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/**
 * The environment the tools see: nothing of this process's, whose AWS_CA_BUNDLE, AWS_PROFILE or RCLONE_*
 * would change what is tested (the AWS SDK for Go, inside rclone, even refuses to start when AWS_CA_BUNDLE
 * is set: it cannot put that bundle on rclone's own transport). HOME is a temp folder, so that no user's
 * ~/.aws or rclone config is read.
 */
function toolEnv(home: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { PATH: "/usr/bin:/bin", HOME: home, LANG: "C.UTF-8", LC_ALL: "C.UTF-8", ...extra };
}

/** A local tree of assorted files: nested folders, an empty file, names with spaces, unicode and `+`, one big file. */
function makeTree(root: string, bigSize: number): void {
  const files: Record<string, Buffer> = {
    "top.txt": Buffer.from("hello from a real S3 client\n"),
    "empty": Buffer.alloc(0),
    "dir with space/ünïcødé 日本語 😀.txt": Buffer.from("unicode and spaces\n"),
    "dir with space/a+b c&d=e.dat": randomBytes(4097),
    "nested/medium.bin": randomBytes(300_000),
    "nested/deeper/deepest/small.bin": randomBytes(1024),
    "nested/big.bin": randomBytes(bigSize),
  };
  for (const [rel, data] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, rel)), { recursive: true });
    fs.writeFileSync(path.join(root, rel), data);
  }
}

/** Every file under `root`, as relative paths with "/", sorted. */
function filesUnder(root: string, under = ""): string[] {
  const out: string[] = [];
  for (const d of fs.readdirSync(path.join(root, under), { withFileTypes: true })) {
    const rel = under ? `${under}/${d.name}` : d.name;
    if (d.isDirectory()) out.push(...filesUnder(root, rel));
    else if (d.isFile()) out.push(rel);
  }
  return out.sort();
}

/** The two trees hold the same files, byte for byte. */
function assertSameTree(want: string, got: string): void {
  const names = filesUnder(want);
  assert.deepEqual(filesUnder(got), names);
  for (const rel of names) {
    assert.ok(fs.readFileSync(path.join(got, rel)).equals(fs.readFileSync(path.join(want, rel))), `${rel} differs`);
  }
}

/** S3's multipart ETag of `data` cut into `partSize` parts: the MD5 of the parts' MD5s, then "-N". */
function multipartEtag(data: Buffer, partSize: number): string {
  const md5s: Buffer[] = [];
  for (let at = 0; at < data.length; at += partSize) md5s.push(createHash("md5").update(data.subarray(at, at + partSize)).digest());
  return `"${createHash("md5").update(Buffer.concat(md5s)).digest("hex")}-${md5s.length}"`;
}

/** A byte in the middle of the file changed, its size kept: only a content check can tell. */
function flipByte(file: string): void {
  const data = fs.readFileSync(file);
  const at = Math.floor(data.length / 2);
  data[at] = data[at]! ^ 0xff;
  fs.writeFileSync(file, data);
}

/** `rclone check --combined` lines, path to mark ("=" same, "*" differs, "+"/"-" only on one side). */
function combined(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(file, "utf8").split("\n")) if (line) out[line.slice(2)] = line[0]!;
  return out;
}

interface Rig {
  c: Cluster;
  url: string;
  key: S3Key;
  ca: string;
  work: string;
}

function rclone(t: TestContext, rig: Rig) {
  const home = path.join(rig.work, "rclone-home");
  fs.mkdirSync(home, { recursive: true });
  const config = path.join(home, "rclone.conf");
  fs.writeFileSync(config, [
    "[dfs]", "type = s3", "provider = Other", `endpoint = ${rig.url}`, `access_key_id = ${rig.key.id}`,
    `secret_access_key = ${rig.key.secret}`, "force_path_style = true", "region = us-east-1", "",
  ].join("\n"));
  // Cutoff and chunk at S3's smallest part, so that a 20 MiB file goes up in parts. One try each: a
  // request the gateway gets wrong must fail the command, not be retried into a pass.
  const common = ["--config", config, "--ca-cert", rig.ca, "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "--retries", "1", "--low-level-retries", "1"];
  return (args: string[]) => run(t, RCLONE, [...args, ...common], toolEnv(home));
}

function awsCli(t: TestContext, rig: Rig) {
  const home = path.join(rig.work, "aws-home");
  fs.mkdirSync(home, { recursive: true });
  const config = path.join(home, "aws-config");
  fs.writeFileSync(config, "[default]\ns3 =\n  addressing_style = path\n  multipart_threshold = 5MB\n  multipart_chunksize = 5MB\n");
  const env = toolEnv(home, {
    AWS_ACCESS_KEY_ID: rig.key.id, AWS_SECRET_ACCESS_KEY: rig.key.secret, AWS_DEFAULT_REGION: "us-east-1", AWS_CONFIG_FILE: config,
    AWS_SHARED_CREDENTIALS_FILE: path.join(home, "no-credentials"), AWS_PAGER: "", AWS_EC2_METADATA_DISABLED: "true",
  });
  return (args: string[]) => run(t, AWS, ["--endpoint-url", rig.url, "--ca-bundle", rig.ca, ...args], env);
}

test("real S3 clients against the gateway over HTTPS: rclone and the AWS CLI", { timeout: 15 * 60_000 }, async (t) => {
  requireTools();
  const c = await startCluster(t);
  const key = await addKey(t, c);
  const gw = await startGateway(t, c, { https: true });
  assert.match(gw.url, /^https:\/\/127\.0\.0\.1:/);
  const rig: Rig = { c, url: gw.url, key, ca: path.join(c.certs, "ca.crt"), work: tmpDir(t) };
  const s3 = s3Client(gw.url, key, c.certs);
  t.after(() => s3.destroy());

  await t.test("rclone: copy a tree up and back, check it, see a changed byte", async (t) => {
    const rc = rclone(t, rig);
    const local = path.join(rig.work, "rclone-tree");
    makeTree(local, 20 * MiB + 12_345);
    ok(await rc(["mkdir", "dfs:rclone-bkt"]), "rclone mkdir");
    ok(await rc(["copy", local, "dfs:rclone-bkt/tree"]), "rclone copy up");

    // Listed whole, and in pages of two: ListObjects (v1, rclone's choice for this provider) and ListObjectsV2
    // with URL-encoded keys, folder by folder and (--fast-list) all at once. Not v1 with URL-encoded keys:
    // rclone decodes the last key of such a page twice to make the next marker, so "a+b" comes out "a b",
    // whatever the server.
    const listings = [[], ...[["--s3-list-version", "1"], ["--s3-list-version", "2", "--s3-list-url-encode", "true"]]
      .flatMap((v) => [[], ["--fast-list"]].map((fast) => ["--s3-list-chunk", "2", ...v, ...fast]))];
    for (const args of listings) {
      const listed = ok(await rc(["lsf", "-R", "--files-only", ...args, "dfs:rclone-bkt/tree"]), `rclone lsf ${args.join(" ")}`).split("\n").filter(Boolean).sort();
      assert.deepEqual(listed, filesUnder(local), `rclone lsf ${args.join(" ")}`);
    }
    const big = fs.readFileSync(path.join(local, "nested/big.bin"));
    const head = await s3.send(new HeadObjectCommand({ Bucket: "rclone-bkt", Key: "tree/nested/big.bin" }));
    assert.equal(head.ETag, multipartEtag(big, 5 * MiB), "the 20 MiB file went up in 5 MiB parts");
    assert.equal(head.ContentLength, big.length);
    assert.ok(head.Metadata?.mtime, "rclone's x-amz-meta-mtime is kept");

    const down = path.join(rig.work, "rclone-down");
    ok(await rc(["copy", "dfs:rclone-bkt/tree", down]), "rclone copy down");
    assertSameTree(local, down);
    for (const rel of filesUnder(local)) {
      // rclone keeps the modification time in the object's metadata and sets it again on download.
      assert.ok(Math.abs(fs.statSync(path.join(down, rel)).mtimeMs - fs.statSync(path.join(local, rel)).mtimeMs) < 1, `${rel}'s mtime kept`);
    }

    const report = path.join(rig.work, "rclone-check");
    ok(await rc(["check", local, "dfs:rclone-bkt/tree", "--combined", report]), "rclone check");
    assert.deepEqual(combined(report), Object.fromEntries(filesUnder(local).map((f) => [f, "="])));

    // Same size, one byte changed: the check compares MD5s (of the multipart object too, from rclone's metadata).
    flipByte(path.join(local, "nested/big.bin"));
    const bad = await rc(["check", local, "dfs:rclone-bkt/tree", "--combined", report]);
    assert.notEqual(bad.code, 0, "rclone check finds the changed file");
    assert.match(bad.stderr, /1 differences found/);
    assert.deepEqual(combined(report), Object.fromEntries(filesUnder(local).map((f) => [f, f === "nested/big.bin" ? "*" : "="])));

    const purge = await rc(["purge", "dfs:rclone-bkt"]);
    ok(purge, "rclone purge");
    // purge reads the bucket's versioning state first, and logs an error when that is not served.
    assert.doesNotMatch(purge.stderr, /versioning|ERROR/i);
    await assert.rejects(s3.send(new HeadBucketCommand({ Bucket: "rclone-bkt" })), (err) => err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404);
  });

  await t.test("aws s3: mb, cp up and down, sync, ls, a multipart ETag, cp and mv between keys, rm, rb", async (t) => {
    const aws = awsCli(t, rig);
    const local = path.join(rig.work, "aws-tree");
    makeTree(local, 12 * MiB + 777);
    assert.match(ok(await aws(["s3", "mb", "s3://aws-bkt"]), "aws s3 mb"), /make_bucket: aws-bkt/);
    ok(await aws(["s3", "cp", "--recursive", "--only-show-errors", local, "s3://aws-bkt/tree/"]), "aws s3 cp up");
    // sync goes by the listing's sizes and times: nothing to send until a file grows.
    assert.equal(ok(await aws(["s3", "sync", "--no-progress", local, "s3://aws-bkt/tree/"]), "aws s3 sync"), "");
    fs.appendFileSync(path.join(local, "top.txt"), "one more line\n");
    assert.match(ok(await aws(["s3", "sync", "--no-progress", local, "s3://aws-bkt/tree/"]), "aws s3 sync"), /^upload: \S+ to s3:\/\/aws-bkt\/tree\/top\.txt\n$/);

    const top = ok(await aws(["s3", "ls", "s3://aws-bkt/tree/"]), "aws s3 ls");
    const topLines = top.split("\n").filter(Boolean);
    assert.deepEqual(topLines.filter((l) => /^\s+PRE /.test(l)).map((l) => l.trim()).sort(), ["PRE dir with space/", "PRE nested/"]);
    assert.deepEqual(topLines.filter((l) => !/^\s+PRE /.test(l)).map((l) => l.replace(/^\S+ \S+\s+/, "")).sort(), ["0 empty", `${fs.statSync(path.join(local, "top.txt")).size} top.txt`]);

    const all = ok(await aws(["s3", "ls", "--recursive", "s3://aws-bkt"]), "aws s3 ls --recursive");
    assert.equal(ok(await aws(["s3", "ls", "--recursive", "--page-size", "2", "s3://aws-bkt"]), "aws s3 ls in pages"), all);
    const sizes = Object.fromEntries(all.split("\n").filter(Boolean).map((l) => {
      const m = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+(\d+) (.*)$/.exec(l);
      assert.ok(m, `a listing line: ${l}`);
      return [m[2]!, Number(m[1])];
    }));
    assert.deepEqual(sizes, Object.fromEntries(filesUnder(local).map((f) => [`tree/${f}`, fs.statSync(path.join(local, f)).size])));

    const big = fs.readFileSync(path.join(local, "nested/big.bin"));
    const head = JSON.parse(ok(await aws(["s3api", "head-object", "--bucket", "aws-bkt", "--key", "tree/nested/big.bin"]), "aws s3api head-object")) as { ETag: string; ContentLength: number };
    assert.equal(head.ETag, multipartEtag(big, 5 * MiB), "the 12 MiB file went up in 5 MiB parts");
    assert.equal(head.ContentLength, big.length);

    const down = path.join(rig.work, "aws-down");
    ok(await aws(["s3", "cp", "--recursive", "--only-show-errors", "s3://aws-bkt/tree/", down]), "aws s3 cp down");
    assertSameTree(local, down);

    // Between keys, a large object is copied by parts (UploadPartCopy), after its tags are read.
    ok(await aws(["s3", "cp", "--only-show-errors", "s3://aws-bkt/tree/nested/big.bin", "s3://aws-bkt/copies/big copy.bin"]), "aws s3 cp between keys");
    ok(await aws(["s3", "mv", "--only-show-errors", "s3://aws-bkt/copies/big copy.bin", "s3://aws-bkt/copies/moved.bin"]), "aws s3 mv");
    assert.match(ok(await aws(["s3", "ls", "s3://aws-bkt/copies/"]), "aws s3 ls"), new RegExp(`^\\S+ \\S+\\s+${big.length} moved\\.bin\\n$`));
    const moved = path.join(rig.work, "moved.bin");
    ok(await aws(["s3", "cp", "--only-show-errors", "s3://aws-bkt/copies/moved.bin", moved]), "aws s3 cp of the moved object");
    assert.ok(fs.readFileSync(moved).equals(big));

    const full = await aws(["s3", "rb", "s3://aws-bkt"]);
    assert.notEqual(full.code, 0, "a bucket with objects is not removed");
    assert.match(full.stderr, /BucketNotEmpty/);
    const removed = ok(await aws(["s3", "rm", "--recursive", "s3://aws-bkt"]), "aws s3 rm --recursive");
    assert.equal(removed.split("\n").filter((l) => l.startsWith("delete: ")).length, filesUnder(local).length + 1);
    assert.equal(ok(await aws(["s3", "ls", "--recursive", "s3://aws-bkt"]), "aws s3 ls of the emptied bucket"), "");
    assert.match(ok(await aws(["s3", "rb", "s3://aws-bkt"]), "aws s3 rb"), /remove_bucket: aws-bkt/);
    assert.doesNotMatch(ok(await aws(["s3", "ls"]), "aws s3 ls of the buckets"), /aws-bkt/);
  });

  await t.test("a file written with the dfs client is listed and read back by both tools", async (t) => {
    const payload = randomBytes(MiB + 4321);
    const file = path.join(rig.work, "from-dfs.bin");
    fs.writeFileSync(file, payload);
    const r = await c.client(["write", "/from-dfs/in dir/written by dfs.bin", file]);
    assert.equal(r.code, 0, r.stderr);

    const rc = rclone(t, rig);
    assert.equal(ok(await rc(["lsf", "-R", "--files-only", "--format", "ps", "dfs:from-dfs"]), "rclone lsf"), `in dir/written by dfs.bin;${payload.length}\n`);
    const rdown = path.join(rig.work, "from-dfs-rclone");
    ok(await rc(["copy", "dfs:from-dfs", rdown]), "rclone copy down");
    assert.ok(fs.readFileSync(path.join(rdown, "in dir/written by dfs.bin")).equals(payload));
    // Its ETag is no MD5, so rclone has no hash to compare: --download compares the bytes.
    ok(await rc(["check", "--download", rdown, "dfs:from-dfs"]), "rclone check --download");

    const aws = awsCli(t, rig);
    assert.match(ok(await aws(["s3", "ls", "--recursive", "s3://from-dfs"]), "aws s3 ls"), new RegExp(`^\\S+ \\S+\\s+${payload.length} in dir/written by dfs\\.bin\\n$`));
    const adown = path.join(rig.work, "from-dfs-aws.bin");
    ok(await aws(["s3", "cp", "--only-show-errors", "s3://from-dfs/in dir/written by dfs.bin", adown]), "aws s3 cp down");
    assert.ok(fs.readFileSync(adown).equals(payload));
  });

  // Whatever the tools sent, the gateway neither failed inside (a 5xx is logged as a warning) nor drew a Node warning.
  assert.doesNotMatch(gw.proc.stderr, /^\S+Z (warn|error) |Warning/m);
});
