import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import type { StatusReply } from "../src/protocol/directory.js";
import { ROOT, tmpDir, waitFor } from "./helpers/cluster.js";
import { get, metric, parseMetrics, promtoolCheck } from "./helpers/scrape.js";

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

test("`npm start` serves the whole cluster's status page and metrics, and says where in its log", async (t) => {
  const work = tmpDir(t);
  fs.writeFileSync(path.join(work, "x"), randomBytes(10_000));
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const cluster = path.join(work, "cluster");
  const child = spawn(npm, ["--prefix", ROOT, "start", "--", "--data", cluster], { cwd: work, stdio: ["pipe", "pipe", "pipe"] });
  t.after(() => child.kill("SIGKILL"));
  let err = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  child.stdin.write("write x\n");
  const base = (await waitFor(() => /status page url=(http:\/\/\S+)/.exec(fs.existsSync(path.join(cluster, "dfs.log")) ? fs.readFileSync(path.join(cluster, "dfs.log"), "utf8") : ""), "status page line"))[1]!;
  const status = await waitFor(async () => {
    const s = JSON.parse((await get(`${base}/api/status`)).body) as StatusReply;
    return s.files === 1 ? s : undefined;
  }, "the write in /api/status");
  assert.equal(status.nodes.filter((n) => n.role === "storage" && n.state === "up").length, 3);
  const scraped = (await get(`${base}/metrics`)).body;
  assert.equal(promtoolCheck(scraped).code, 0, promtoolCheck(scraped).output);
  const series = parseMetrics(scraped);
  assert.equal(metric(series, "dfs_client_uploaded_chunks_total"), 1);
  assert.equal(metric(series, "dfs_storage_chunks"), 2, "three storage nodes' gauges, two copies");
  assert.match((await get(`${base}/`)).body, /<!doctype html/i);
  child.stdin.end();
  assert.equal(await exited, 0, err);
});
