import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { initCerts } from "../src/certs/generate.js";
import type { FileInfo } from "../src/protocol/directory.js";
import { runDfs, startCluster, tmpDir } from "./helpers/cluster.js";
import { get, metric, parseMetrics, promtoolCheck } from "./helpers/scrape.js";

const HTTP = ["--http", "127.0.0.1:0"];

async function scrape(url: string): Promise<{ text: string; series: Map<string, number> }> {
  const r = await get(`${url}/metrics`);
  assert.equal(r.status, 200, r.body);
  return { text: r.body, series: parseMetrics(r.body) };
}

test("every role serves /metrics that promtool accepts, and its counters move with a write and a read", async (t) => {
  const c = await startCluster(t, { directoryArgs: HTTP, lockArgs: HTTP, storageArgs: () => HTTP });
  const urls = { directory: await c.directory.http(), lock: await c.lock.http(), storage: await Promise.all(c.storage.map((s) => s.http())) };
  const all = [urls.directory, urls.lock, ...urls.storage];
  const before = await Promise.all(all.map(scrape));
  for (const [i, s] of before.entries()) {
    const check = promtoolCheck(s.text);
    assert.equal(check.code, 0, `promtool on ${all[i]}: ${check.output}`);
    assert.ok(metric(s.series, "process_resident_memory_bytes") > 0, "process memory");
    assert.ok(s.series.has("nodejs_eventloop_lag_seconds"), "event-loop delay");
  }
  assert.equal(metric(before[0]!.series, "dfs_nodes", { role: "storage", state: "up" }), 3);
  assert.equal(metric(before[0]!.series, "dfs_nodes", { role: "lock", state: "up" }), 1);

  const dir = tmpDir(t);
  const data = randomBytes(300 * 1024);
  const local = path.join(dir, "a.bin");
  fs.writeFileSync(local, data);
  for (let i = 0; i < 2; i++) assert.equal((await c.client(["write", "/m/a.bin", local])).code, 0); // the second replaces it under the lock
  const back = path.join(dir, "b.bin");
  assert.equal((await c.client(["read", "/m/a.bin", back], { cache: path.join(dir, "cache") })).code, 0);
  assert.deepEqual(fs.readFileSync(back), data);

  const after = await Promise.all(all.map(scrape));
  const delta = (i: number, name: string, labels?: Record<string, string>) => metric(after[i]!.series, name, labels) - metric(before[i]!.series, name, labels);
  const storageDelta = (name: string, labels?: Record<string, string>) => urls.storage.reduce((sum, _, k) => sum + delta(2 + k, name, labels), 0);
  assert.equal(delta(0, "dfs_requests_total", { type: "dir.commit", code: "OK" }), 2);
  assert.equal(delta(0, "dfs_committed_bytes_total"), 2 * data.length);
  assert.ok(delta(0, "dfs_opened_bytes_total") >= data.length, "the read's lookup counts");
  assert.equal(metric(after[0]!.series, "dfs_files"), 1);
  assert.equal(metric(after[0]!.series, "dfs_file_bytes"), data.length);
  assert.ok(delta(0, "dfs_fsync_duration_seconds_count") >= 2, "the directory's journal fsyncs");
  // The second write's create-if-absent commit finds the file and is answered CONFLICT before its locked commit.
  assert.equal(delta(0, "dfs_requests_total", { type: "dir.commit", code: "CONFLICT" }), 1);
  assert.equal(delta(0, "dfs_request_duration_seconds_count", { type: "dir.commit" }), 3);
  assert.equal(delta(1, "dfs_requests_total", { type: "lock.acquire", code: "OK" }), 1);
  assert.ok(storageDelta("dfs_requests_total", { type: "store.put", code: "OK" }) >= 2, "puts along the chain");
  assert.ok(storageDelta("dfs_requests_total", { type: "store.get", code: "OK" }) >= 1, "the read's get");
  assert.ok(storageDelta("dfs_received_bytes_total") >= 2 * data.length, "two copies arrived");
  assert.ok(storageDelta("dfs_fsync_duration_seconds_count") >= 2, "each copy was fsynced");
  assert.equal(urls.storage.reduce((sum, _, k) => sum + metric(after[2 + k]!.series, "dfs_storage_chunks"), 0), 2);
  assert.ok(metric(after[2]!.series, "dfs_storage_free_bytes") > 0);

  // The API: what the page reads, and clear errors for bad input.
  const json = async (p: string, status: number) => {
    const r = await get(urls.directory + p);
    assert.equal(r.status, status, `${p}: ${r.body}`);
    return JSON.parse(r.body) as Record<string, unknown>;
  };
  assert.deepEqual(await json("/api/ls?prefix=/", 200), { prefix: "/", folders: ["/m/"], files: [], truncated: false });
  const file = await json("/api/file?path=/m/a.bin", 200) as unknown as FileInfo;
  assert.equal(file.sha256, createHash("sha256").update(data).digest("hex"));
  assert.equal(file.chunks[0]!.replicas.length, 2);
  assert.equal((await json("/api/file?path=/m/none", 404) as { error: { code: string } }).error.code, "NOT_FOUND");
  assert.equal((await json("/api/ls?prefix=/&limit=lots", 400) as { error: { code: string } }).error.code, "BAD_REQUEST");
  assert.equal((await json("/api/nothing", 404) as { error: { code: string } }).error.code, "NOT_FOUND");
  const history = await json("/api/history", 200) as { intervalSeconds: number; samples: unknown[] };
  assert.equal(history.intervalSeconds, 2);
  assert.equal((await get(urls.lock + "/api/status")).status, 404, "only directories serve the API");
});

test("beyond loopback the page and API need a client certificate of the cluster CA or the token; /metrics too unless opened", async (t) => {
  const dir = tmpDir(t);
  const tokenFile = path.join(dir, "token");
  const token = randomBytes(24).toString("hex");
  fs.writeFileSync(tokenFile, token + "\n");
  const c = await startCluster(t, {
    storage: 1,
    directoryArgs: ["--http", "0.0.0.0:0", "--http-token-file", tokenFile],
    storageArgs: () => ["--http", "0.0.0.0:0", "--http-metrics-open"],
  });
  const port = (u: string) => new URL(u).port;
  const dirBase = `https://127.0.0.1:${port(await c.directory.http())}`;
  const storageBase = `https://127.0.0.1:${port(await c.storage[0]!.http())}`;
  const ca = fs.readFileSync(path.join(c.certs, "ca.crt"), "utf8");
  const client = { ca, cert: fs.readFileSync(path.join(c.certs, "client.crt"), "utf8"), key: fs.readFileSync(path.join(c.certs, "client.key"), "utf8") };
  const foreignDir = path.join(dir, "foreign");
  await initCerts({ dir: foreignDir });
  const foreign = { ca, cert: fs.readFileSync(path.join(foreignDir, "client.crt"), "utf8"), key: fs.readFileSync(path.join(foreignDir, "client.key"), "utf8") };

  for (const p of ["/", "/api/status", "/api/ls?prefix=/", "/metrics"]) {
    assert.equal((await get(dirBase + p, { tls: { ca } })).status, 401, `${p} without credentials`);
    assert.equal((await get(dirBase + p, { tls: { ca }, headers: { authorization: `Bearer ${token}x` } })).status, 401, `${p} with a wrong token`);
    assert.equal((await get(dirBase + p, { tls: foreign })).status, 401, `${p} with another CA's certificate`);
  }
  const byToken = await get(dirBase + "/api/status", { tls: { ca }, headers: { authorization: `Bearer ${token}` } });
  assert.equal(byToken.status, 200);
  assert.equal((JSON.parse(byToken.body) as { nodes: unknown[] }).nodes.length, 2);
  const basic = (password: string) => ({ authorization: `Basic ${Buffer.from(`admin:${password}`).toString("base64")}` });
  const denied = await get(dirBase + "/", { tls: { ca } });
  assert.match(denied.headers["www-authenticate"] ?? "", /^Basic /, "a browser is asked for the token");
  assert.equal((await get(dirBase + "/", { tls: { ca }, headers: basic(token + "x") })).status, 401);
  assert.equal((await get(dirBase + "/api/status", { tls: { ca }, headers: basic(token) })).status, 200, "the token as a browser's password");
  const page = await get(dirBase + "/", { tls: client });
  assert.equal(page.status, 200);
  assert.match(page.body, /<html|<!doctype html/i);
  assert.equal((await get(dirBase + "/metrics", { tls: client })).status, 200);

  // --http-metrics-open opens /metrics alone.
  const metricsOpen = await get(storageBase + "/metrics", { tls: { ca } });
  assert.equal(metricsOpen.status, 200);
  assert.ok(metric(parseMetrics(metricsOpen.body), "dfs_storage_free_bytes") > 0);
  assert.equal((await get(storageBase + "/api/status", { tls: { ca } })).status, 401);
});

test("--http options: a bad address, options without --http and --http on a client each get a one-line error", async (t) => {
  const cases: [string[], RegExp][] = [
    [["--role", "directory", "--http", "nowhere"], /--http.*not an address like 127\.0\.0\.1:9100/],
    [["--role", "directory", "--http-token-file", "t"], /--http-token-file needs --http/],
    [["--role", "client", "--http", "127.0.0.1:0", "ls"], /--http is for server roles/],
  ];
  for (const [args, message] of cases) {
    const r = await runDfs(t, args);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});
