import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { promisify } from "node:util";
import { Cluster, ROOT, runDfs, tmpDir, waitFor, type DfsExec } from "./helpers/cluster.js";
import { VERSION } from "../src/version.js";

// The single executable (`npm run build:bin`, DESIGN.md section 7): one file that runs every role on
// a machine without Node. The test runs it alone in an empty folder with no `node` on its PATH.

const BIN = path.join(ROOT, "dist/dfs");
/** What the executable is made from: a newer file here means dist/dfs is stale. */
const SOURCES = ["src", "scripts/build-bin.mjs", "package.json", "package-lock.json"];

function newestMtime(p: string): number {
  const abs = path.join(ROOT, p);
  if (!fs.existsSync(abs)) return 0;
  const st = fs.statSync(abs);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const rel of fs.readdirSync(abs, { recursive: true, encoding: "utf8" })) newest = Math.max(newest, fs.statSync(path.join(abs, rel)).mtimeMs);
  return newest;
}

async function ensureBinary(): Promise<void> {
  const built = fs.existsSync(BIN) ? fs.statSync(BIN).mtimeMs : 0;
  if (built > Math.max(...SOURCES.map(newestMtime))) return;
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  try {
    await promisify(execFile)(npm, ["run", "build:bin"], { cwd: ROOT, maxBuffer: 16 * 1024 * 1024, timeout: 8 * 60_000 });
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string };
    throw new Error(`npm run build:bin failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`);
  }
}

const sha256 = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");

test("the single executable runs a cluster, the client and `local` without Node", { timeout: 10 * 60_000, skip: process.platform !== "linux" || process.arch !== "x64" ? "the executable is built for Linux x86-64" : false }, async (t) => {
  await ensureBinary();

  // The executable alone in an empty folder, started with a PATH that holds nothing at all.
  const binDir = tmpDir(t, "dfs-bin-");
  const exe = path.join(binDir, "dfs");
  fs.copyFileSync(BIN, exe);
  fs.chmodSync(exe, 0o755);
  assert.deepEqual(fs.readdirSync(binDir), ["dfs"]);
  const emptyPath = tmpDir(t, "dfs-nopath-");
  const home = tmpDir(t, "dfs-home-");
  const work = tmpDir(t, "dfs-work-");
  const env = { PATH: emptyPath, HOME: home };
  const noNode = spawnSync("node", ["--version"], { env });
  assert.equal((noNode.error as NodeJS.ErrnoException | undefined)?.code, "ENOENT", "`node` must not be reachable from the executable's PATH");
  const exec: DfsExec = { bin: exe, env, inheritEnv: false, cwd: work };

  const version = await runDfs(t, ["--version"], exec);
  assert.equal(version.code, 0, version.stderr);
  assert.equal(version.stdout.trim(), VERSION);
  const help = await runDfs(t, ["--help"], exec);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /Usage: dfs/);

  // A cluster of separate processes of the executable: certificates, directory, lock, three storage nodes.
  // Frequent snapshots: each is built by a checkpointer process, which is the executable started again.
  const cluster = new Cluster(t, { exec, directoryArgs: ["--snapshot-every", "5"] });
  const certs = await runDfs(t, ["certs", "init", "--dir", "certs"], { ...exec, cwd: cluster.root });
  assert.equal(certs.code, 0, certs.stderr);
  assert.ok(fs.existsSync(path.join(cluster.certs, "ca.crt")));
  await cluster.startDirectory();
  await Promise.all([cluster.startLock(), ...[0, 1, 2].map((i) => cluster.startStorage(i))]);
  await cluster.waitUp(3);

  const input = path.join(work, "in.bin");
  fs.writeFileSync(input, randomBytes(5 * 1024 * 1024 + 12_345)); // more than one 4 MiB chunk
  const wrote = await cluster.client(["write", "/big.bin", input]);
  assert.equal(wrote.code, 0, wrote.stderr);
  const output = path.join(work, "out.bin");
  const read = await cluster.client(["read", "/big.bin", output]);
  assert.equal(read.code, 0, read.stderr);
  assert.equal(sha256(output), sha256(input));
  await waitFor(() => /snapshot-written gen=\d+/.test(cluster.directory.stderr), "a snapshot built by the executable's checkpointer");

  // `dfs local`: a whole cluster in one process of the executable, with commands on stdin.
  const localDir = path.join(work, "local");
  fs.mkdirSync(localDir);
  const x = randomBytes(300_000);
  fs.writeFileSync(path.join(localDir, "x"), x);
  const local = await runDfs(t, ["local", "--data", path.join(localDir, "cluster")], { ...exec, cwd: localDir, stdin: "write x\nread x y\nls\n" });
  assert.equal(local.code, 0, local.stderr);
  assert.match(local.stdout, /wrote \/x v1/);
  assert.match(local.stdout, /read \/x v1 -> y/);
  assert.deepEqual(fs.readFileSync(path.join(localDir, "y")), x);
});
