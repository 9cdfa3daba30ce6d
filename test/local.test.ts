import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { ROOT, tmpDir } from "./helpers/cluster.js";

test("`npm start` with piped commands runs a whole local cluster and the client", async (t) => {
  const work = tmpDir(t);
  const data = randomBytes(300_000);
  fs.writeFileSync(path.join(work, "x"), data);
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const child = spawn(npm, ["--prefix", ROOT, "start", "--", "--data", path.join(work, "cluster")], { cwd: work, stdio: ["pipe", "pipe", "pipe"] });
  t.after(() => child.kill("SIGKILL"));
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  child.stdin.end("write x\nread x y\nls\n");
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  assert.equal(code, 0, err);
  assert.match(out, /wrote \/x v1/);
  assert.match(out, /read \/x v1 -> y/);
  assert.match(out, /\/x\n/);
  assert.deepEqual(fs.readFileSync(path.join(work, "y")), data);
});
