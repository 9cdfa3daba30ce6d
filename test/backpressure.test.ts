import assert from "node:assert/strict";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { pack, unpack } from "msgpackr";
import { initCerts, loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import { DfsError } from "../src/protocol/errors.js";
import { Actor, Router, type Handler } from "../src/transport/actor.js";
import { connect } from "../src/transport/connect.js";
import { later, Mailbox } from "../src/transport/mailbox.js";
import { listen, type ServerInit } from "../src/transport/server.js";
import { tmpDir, waitFor } from "./helpers/cluster.js";
import { openRaw } from "./helpers/raw.js";

const log = logger("test");
const any = (b: unknown) => b;
const code = (p: Promise<unknown>) => p.then(() => "ok", (e: DfsError) => e.code);

async function serve(t: TestContext, handlers: Record<string, Handler>, opts: Partial<ServerInit> & { capacity?: number; concurrency?: number } = {}) {
  const certs = path.join(tmpDir(t), "certs");
  await initCerts({ dir: certs });
  const { capacity, concurrency = 1, ...serverInit } = opts;
  const router = new Router();
  router.add(new Actor({ name: "t", prefix: "t.", concurrency, capacity, handlers }));
  const server = await listen({ host: "127.0.0.1", port: 0, tls: loadCerts(certs, "directory"), router, log, ...serverInit });
  t.after(() => server.close());
  return { server, tls: loadCerts(certs, "client") };
}

/** A gate that deferred handlers wait on, as requests wait on a group fsync or a lock. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { opened, open };
}

test("deferred replies count against the mailbox until they settle", async () => {
  const g = gate();
  const box = new Mailbox<number>({ concurrency: 1, capacity: 2, handle: () => later(g.opened) });
  const held = [box.post(1), box.post(2), box.post(3)];
  // Each handler returned at once, freeing its slot; the replies still wait, so the mailbox is full.
  await new Promise((r) => setImmediate(r));
  assert.equal(box.depth, 0, "nothing is queued");
  assert.equal(box.held, 3);
  assert.equal(await code(box.post(4)), "BUSY");
  g.open();
  await Promise.all(held);
  assert.equal(box.held, 0);
  assert.equal(await code(box.post(5)), "ok");
});

test("one sender cannot take more than its share of a mailbox", async () => {
  const g = gate();
  const box = new Mailbox<string>({ concurrency: 1, capacity: 9, senderCapacity: 4, handle: () => later(g.opened) });
  const a = Array.from({ length: 6 }, () => code(box.post("a", "A")));
  const b = code(box.post("b", "B"));
  await new Promise((r) => setImmediate(r));
  assert.equal(box.held, 5, "four of A's messages and B's one");
  g.open();
  assert.deepEqual(await Promise.all(a), ["ok", "ok", "ok", "ok", "BUSY", "BUSY"]);
  assert.equal(await b, "ok");
});

test("a deep queue of busy handlers lets the event loop turn instead of holding it until the queue is empty", async () => {
  let handled = 0;
  const spin = (ms: number) => {
    const end = performance.now() + ms;
    while (performance.now() < end);
  };
  const box = new Mailbox<number>({ concurrency: 1, capacity: 1000, handle: () => void (spin(0.5), handled++) });
  const all = Array.from({ length: 400 }, (_, i) => box.post(i)); // 200 ms of work, queued at once
  // A timer stands for a pong or a socket read: it runs once the loop turns.
  const atTimer = await new Promise<number>((r) => setTimeout(() => r(handled), 0));
  await Promise.all(all);
  assert.equal(handled, 400);
  assert.ok(atTimer < 100, `the loop turned after ${atTimer} of 400 handlers (about 10 ms of work), not at the end`);
});

test("a body that takes long to check is handled in a later turn of the event loop, still in arrival order", async (t) => {
  const marks: string[] = [];
  const spin = (ms: number) => {
    const end = performance.now() + ms;
    while (performance.now() < end);
  };
  const { server, tls } = await serve(t, {
    "t.big": { allow: ["client"], parse: (b) => {
      spin(20);
      setImmediate(() => marks.push("turn")); // runs once the loop turns after this check
      return b;
    }, handle: () => void marks.push("big") },
    "t.small": { allow: ["client"], parse: any, handle: () => void marks.push("small") },
  });
  const peer = await connect(server.url, { tls, log });
  t.after(() => peer.close());
  await Promise.all([peer.request("t.big", {}), peer.request("t.small", {})]);
  assert.deepEqual(marks, ["turn", "big", "small"]);
});

test("a flood of deferred requests on one connection gets BUSY answers while another connection is served", async (t) => {
  const g = gate();
  let parked = 0;
  let mostParked = 0;
  const { server, tls } = await serve(t, {
    "t.park": { allow: ["client"], parse: any, handle: () => {
      mostParked = Math.max(mostParked, ++parked);
      return later(g.opened.then(() => void parked--));
    } },
    "t.echo": { allow: ["client"], parse: any, handle: (b) => b },
  }, { capacity: 200, concurrency: 1, inflight: { requests: 1000 } });
  const flooder = await connect(server.url, { tls, log });
  t.after(() => flooder.close());
  const other = await connect(server.url, { tls, log });
  t.after(() => other.close());

  const N = 5000;
  let answered = 0;
  let mostHeld = 0;
  const flood = Array.from({ length: N }, () => code(flooder.request("t.park", {}, { timeoutMs: 60_000 })).finally(() => answered++));
  // Every refused request is answered at once; only the parked ones wait for the gate.
  await waitFor(() => {
    mostHeld = Math.max(mostHeld, server.stats().requests);
    return answered === N - parked && parked > 0;
  }, "BUSY answers to the flood", 30_000, 5);
  // The flooding connection may hold half the mailbox ((1 + 200) / 2), so the other one still gets in.
  assert.deepEqual(await other.request("t.echo", { hi: 1 }), { hi: 1 });
  const before = parked;
  const otherParked = code(other.request("t.park", {}));
  await waitFor(() => parked === before + 1, "the other connection's request parked, not refused", 5000, 5);
  g.open();
  assert.equal(await otherParked, "ok");
  const outcomes = await Promise.all(flood);
  const ok = outcomes.filter((o) => o === "ok").length;
  const busy = outcomes.filter((o) => o === "BUSY").length;
  t.diagnostic(`flood of ${N}: ${ok} parked and answered, ${busy} BUSY; at most ${mostParked} parked, ${mostHeld} in flight on the server`);
  assert.equal(ok + busy, N, "every request was answered");
  assert.ok(busy >= N - 101, `${busy} BUSY`);
  assert.ok(before <= 101, `${before} of the flood parked`);
  assert.ok(mostParked <= before + 1, `at most ${mostParked} parked`);
  // In flight on the server: the parked ones and answers not yet written, bounded by the read limit
  // plus the requests (10 bytes or more each) of one TLS record (16 KiB) ws had read when it paused.
  assert.ok(mostHeld <= 1000 + Math.ceil(16384 / 10), `the server held at most ${mostHeld} requests`);
  await waitFor(() => server.stats().requests === 0, "nothing left in flight");
});

test("a peer that stops reading slows its own sending: the bytes wait on its side, not the server's", async (t) => {
  const budget = 1024 * 1024;
  const { server, tls } = await serve(t, { "t.echo": { allow: ["client"], parse: any, handle: (b) => b } }, {
    inflight: { bytes: budget },
    // Long enough that this peer is not dropped for not reading; the next test drops one.
    heartbeat: { intervalMs: 60_000, maxPingOut: 3 },
  });
  const ws = await openRaw(server.url, tls);
  t.after(() => ws.terminate());
  const replies = new Set<number>();
  ws.on("message", (data: Buffer) => {
    const [kind, id] = unpack(data) as [number, number];
    assert.equal(kind, 1);
    replies.add(id);
  });
  ws.pause();
  const N = 1000;
  const data = Buffer.alloc(64 * 1024, 1);
  for (let id = 1; id <= N; id++) ws.send(pack([0, id, "t.echo", { data }]));
  // The server's answers fill the socket buffers, then it stops reading; our requests back up here.
  await waitFor(() => server.stats().paused === 1 && ws.bufferedAmount > 16 * 1024 * 1024, "server paused and our buffer grown", 30_000, 10);
  const held = server.stats();
  t.diagnostic(`server holds ${held.requests} requests, ${held.bytes} bytes; sender buffers ${ws.bufferedAmount} bytes`);
  // The budget, plus the request and answer of a frame ws had already read when it paused.
  assert.ok(held.bytes <= budget + 4 * data.length, `server holds ${held.bytes} bytes`);
  assert.ok(ws.bufferedAmount > 8 * held.bytes);
  ws.resume();
  await waitFor(() => replies.size === N, "every answer", 60_000, 20);
  assert.deepEqual(server.stats(), { connections: 1, paused: 0, requests: 0, bytes: 0 });
  assert.equal(ws.bufferedAmount, 0);
});

test("a peer that never reads its answers again is dropped after maxPingOut intervals, freeing what it held", async (t) => {
  const { server, tls } = await serve(t, { "t.echo": { allow: ["client"], parse: any, handle: (b) => b } }, {
    inflight: { bytes: 1024 * 1024 },
    heartbeat: { intervalMs: 200, maxPingOut: 3 },
  });
  const ws = await openRaw(server.url, tls);
  t.after(() => ws.terminate());
  ws.pause();
  const data = Buffer.alloc(64 * 1024, 1);
  for (let id = 1; id <= 500; id++) ws.send(pack([0, id, "t.echo", { data }]));
  await waitFor(() => server.stats().paused === 1, "server paused", 30_000, 10);
  // Paused, with answers that do not move: the peer does not read, and is dead to us.
  await waitFor(() => server.connections === 0, "the silent reader dropped", 30_000, 20);
  assert.deepEqual(server.stats(), { connections: 0, paused: 0, requests: 0, bytes: 0 });
});

test("a server that stops reading a connection keeps it alive with its own pings", async (t) => {
  const g = gate();
  const { server, tls } = await serve(t, { "t.park": { allow: ["client"], parse: any, handle: () => later(g.opened) } }, {
    capacity: 1000,
    inflight: { requests: 8 },
    heartbeat: { intervalMs: 100, maxPingOut: 50 },
  });
  // A strict client: three missed pings and the server is dead to it.
  const client = await connect(server.url, { tls, log, heartbeat: { intervalMs: 200, maxPingOut: 3 } });
  t.after(() => client.close());
  const parked = Array.from({ length: 40 }, () => code(client.request("t.park", {})));
  await waitFor(() => server.stats().paused === 1, "server paused", 10_000, 10);
  // The server reads none of the client's pings now; the client hears the server's pings instead.
  // A period to live through, not an event to wait for: without those pings it ends within 800 ms.
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(client.closed, false, "the client kept the connection through 7 of its heartbeat intervals");
  g.open();
  assert.deepEqual(new Set(await Promise.all(parked)), new Set(["ok"]));
});
