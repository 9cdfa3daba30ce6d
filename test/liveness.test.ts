import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { initCerts, loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import { DfsError } from "../src/protocol/errors.js";
import { Actor, Router } from "../src/transport/actor.js";
import { connect } from "../src/transport/connect.js";
import { CONTROL_HEARTBEAT, DATA_HEARTBEAT, Heartbeat, type HeartbeatOptions } from "../src/transport/heartbeat.js";
import { Link } from "../src/transport/link.js";
import { Pool } from "../src/transport/pool.js";
import { listen } from "../src/transport/server.js";
import { Proc, ROOT, tmpDir } from "./helpers/cluster.js";

const log = logger("test");

async function certsFor(t: TestContext): Promise<string> {
  const dir = path.join(tmpDir(t), "certs");
  await initCerts({ dir });
  return dir;
}

/** A transport server in a child process (test/helpers/peer.ts), to freeze or block for real. */
async function startPeer(t: TestContext, certs: string, hb: HeartbeatOptions): Promise<Proc> {
  const args = [path.join(ROOT, "test/helpers/peer.ts"), certs, String(hb.intervalMs), String(hb.maxPingOut)];
  const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, DFS_LOG_LEVEL: "warn" },
  });
  const p = new Proc(child, args);
  t.after(() => p.kill());
  await p.listening();
  return p;
}

/** How a promise ended: its error code, or "ok". */
const outcome = (p: Promise<unknown>) => p.then(() => "ok", (e: DfsError) => e.code);

test("a heartbeat gives up only after maxPingOut pings in a row went unanswered", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const host = {
    pings: 0, readsPaused: false, writesPending: false, framesWritten: 0, deadWith: 0,
    ping() { this.pings++; },
    dead(missed: number) { this.deadWith = missed; },
  };
  const hb = new Heartbeat(host, { intervalMs: 100, maxPingOut: 3 });
  const tick = (n = 1) => {
    for (let i = 0; i < n; i++) t.mock.timers.tick(100);
  };
  hb.start();
  tick(); // the first ping: nothing was asked before it
  tick(2);
  assert.equal(hb.pingsOut, 2);
  hb.alive();
  tick();
  assert.equal(hb.pingsOut, 0, "anything heard from the peer answers every ping before it");
  // While we do not read the peer's socket and owe it nothing, its silence is not its fault.
  host.readsPaused = true;
  tick(5);
  assert.equal(hb.pingsOut, 0);
  // Unless our own frames to it stop moving too: then it does not read either.
  host.writesPending = true;
  tick(2);
  assert.equal(hb.pingsOut, 2);
  host.framesWritten++;
  tick();
  assert.equal(hb.pingsOut, 2, "frames that moved since the last ping hold the count");
  assert.equal(host.deadWith, 0);
  tick();
  assert.equal(host.deadWith, 3, "the third unanswered ping in a row ends it");
  const pings = host.pings;
  tick(5);
  assert.equal(host.pings, pings, "a dead heartbeat pings no more");
});

test("the default heartbeats: links ride out a busy directory, data connections drop a frozen node in seconds", () => {
  // Silence shorter than maxPingOut intervals is survived; one of maxPingOut + 1 intervals is not.
  assert.ok(CONTROL_HEARTBEAT.maxPingOut * CONTROL_HEARTBEAT.intervalMs >= 5000, "control links tolerate 5 s of silence");
  assert.ok((DATA_HEARTBEAT.maxPingOut + 1) * DATA_HEARTBEAT.intervalMs <= 5000, "data connections give up within 5 s");
  assert.throws(() => new Heartbeat({ ping() {}, dead() {}, readsPaused: false, writesPending: false, framesWritten: 0 }, { intervalMs: 100, maxPingOut: 0 }), RangeError);
});

test("a peer that blocks its event loop for several heartbeat intervals keeps its connection", async (t) => {
  const certs = await certsFor(t);
  const hb = { intervalMs: 400, maxPingOut: 8 };
  const peer = await startPeer(t, certs, hb);
  const ch = await connect(peer.url, { tls: loadCerts(certs, "client"), log, heartbeat: hb });
  t.after(() => ch.close());
  // 2.5 intervals of silence on both sides: one missed pong used to close the connection.
  assert.equal(await ch.request("t.block", { ms: 1000 }), "done");
  assert.equal(await ch.request("t.block", { ms: 1000 }), "done");
  assert.equal(ch.closed, false, "the connection survived");
  assert.deepEqual(await ch.request("t.echo", { x: 1 }), { x: 1 });
});

test("a frozen peer (SIGSTOP) is declared dead within the bound and its requests fail UNAVAILABLE", async (t) => {
  const certs = await certsFor(t);
  const peer = await startPeer(t, certs, CONTROL_HEARTBEAT);
  const tls = loadCerts(certs, "storage");
  const pool = new Pool({ tls, log });
  t.after(() => pool.close());
  const direct = await connect(peer.url, { tls, log, heartbeat: DATA_HEARTBEAT });
  t.after(() => direct.close());
  assert.deepEqual(await pool.request(peer.url, "t.echo", { x: 1 }), { x: 1 });
  // Long request timeouts: only the heartbeat can end these in time.
  const viaPool = outcome(pool.request(peer.url, "t.never", {}, { timeoutMs: 120_000 }));
  const viaChannel = outcome(direct.request("t.never", {}, { timeoutMs: 120_000 }));
  await assert.doesNotReject(pool.request(peer.url, "t.echo", {}), "the peer answered just before it froze");
  const frozenAt = Date.now();
  peer.child.kill("SIGSTOP");
  assert.deepEqual(await Promise.all([viaPool, viaChannel]), ["UNAVAILABLE", "UNAVAILABLE"]);
  const took = Date.now() - frozenAt;
  t.diagnostic(`declared dead after ${took} ms (bound ${(DATA_HEARTBEAT.maxPingOut + 1) * DATA_HEARTBEAT.intervalMs} ms)`);
  assert.ok(took < 15_000, `dead after ${took} ms`);

  // A fresh connection to the frozen node fails within the pool's connect bound, not the request's timeout.
  const opening = Date.now();
  assert.equal(await outcome(pool.request(peer.url, "t.echo", {}, { timeoutMs: 120_000 })), "UNAVAILABLE");
  const gaveUp = Date.now() - opening;
  t.diagnostic(`connecting to the frozen peer gave up after ${gaveUp} ms`);
  assert.ok(gaveUp < 15_000, `connect gave up after ${gaveUp} ms`);
});

test("an abort is CANCELLED and a deadline TIMEOUT, on every request path", async (t) => {
  const certs = await certsFor(t);
  const router = new Router();
  const never = { allow: ["client"], parse: (b: unknown) => b, handle: () => new Promise(() => {}) };
  router.add(new Actor({ name: "t", prefix: "t.", concurrency: 4, handlers: { "t.never": never } }));
  const server = await listen({ host: "127.0.0.1", port: 0, tls: loadCerts(certs, "directory"), router, log });
  t.after(() => server.close());
  const tls = loadCerts(certs, "client");

  const ch = await connect(server.url, { tls, log });
  t.after(() => ch.close());
  assert.equal(await outcome(ch.request("t.never", {}, { timeoutMs: 50 })), "TIMEOUT");
  const ac = new AbortController();
  const aborted = outcome(ch.request("t.never", {}, { signal: ac.signal }));
  ac.abort();
  assert.equal(await aborted, "CANCELLED");
  assert.equal(await outcome(ch.request("t.never", {}, { signal: AbortSignal.abort() })), "CANCELLED");

  const link = new Link({ urls: [server.url], tls, log }).start();
  t.after(() => link.close());
  assert.equal(await outcome(link.request("t.never", {}, { timeoutMs: 100 })), "TIMEOUT");
  const la = new AbortController();
  const linkAborted = outcome(link.request("t.never", {}, { signal: la.signal }));
  setImmediate(() => la.abort());
  assert.equal(await linkAborted, "CANCELLED");

  const pool = new Pool({ tls, log });
  t.after(() => pool.close());
  assert.equal(await outcome(pool.request(server.url, "t.never", {}, { timeoutMs: 100 })), "TIMEOUT");
  assert.equal(await outcome(pool.request(server.url, "t.never", {}, { signal: AbortSignal.abort() })), "CANCELLED");
  assert.equal(await outcome(connect(server.url, { tls, log, signal: AbortSignal.abort() })), "CANCELLED");

  // A link that cannot come up: its waiters end UNAVAILABLE at their deadline, or CANCELLED at once.
  await server.close();
  const down = new Link({ urls: [server.url], tls, log, minBackoffMs: 20, maxBackoffMs: 50 }).start();
  t.after(() => down.close());
  assert.equal(await outcome(down.request("t.never", {}, { timeoutMs: 200 })), "UNAVAILABLE");
  const da = new AbortController();
  const waiting = outcome(down.ready({ timeoutMs: 60_000, signal: da.signal }));
  da.abort();
  assert.equal(await waiting, "CANCELLED");
  assert.equal(await outcome(down.ready({ failFast: true, timeoutMs: 60_000 })), "UNAVAILABLE");
});
