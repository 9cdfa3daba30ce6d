import assert from "node:assert/strict";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { initCerts, loadCerts } from "../src/certs/index.js";
import { DfsError } from "../src/protocol/errors.js";
import { Actor, Router, type Handler } from "../src/transport/actor.js";
import { decode, encodeParts, Kind } from "../src/transport/codec.js";
import { connect } from "../src/transport/connect.js";
import { Link } from "../src/transport/link.js";
import { listen } from "../src/transport/server.js";
import { logger } from "../src/log.js";
import { WebSocket } from "ws";
import { freeAddress, tmpDir, waitFor } from "./helpers/cluster.js";

const log = logger("test");
const any = (b: unknown) => b;

async function setup(t: TestContext, handlers: Record<string, Handler>, opts: { concurrency?: number; capacity?: number } = {}) {
  const certs = path.join(tmpDir(t), "certs");
  await initCerts({ dir: certs });
  const router = new Router();
  router.add(new Actor({ name: "t", prefix: "t.", concurrency: opts.concurrency ?? 1, capacity: opts.capacity, handlers }));
  router.ready();
  const server = await listen({ host: "127.0.0.1", port: 0, tls: loadCerts(certs, "directory"), router, log });
  t.after(() => server.close());
  const client = await connect(server.url, { tls: loadCerts(certs, "client"), log });
  t.after(() => client.close());
  return { server, client, certs, router };
}

test("1,000 concurrent requests each get their own reply", async (t) => {
  const { client } = await setup(t, {
    "t.echo": { allow: ["client"], parse: any, handle: async (b) => {
      await new Promise((r) => setImmediate(r));
      return b;
    } },
  }, { concurrency: 8, capacity: 2000 });
  const replies = await Promise.all(Array.from({ length: 1000 }, (_, i) => client.request<{ i: number }>("t.echo", { i })));
  replies.forEach((r, i) => assert.equal(r.i, i));
});

test("a full mailbox answers BUSY and recovers", async (t) => {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const { client } = await setup(t, {
    "t.wait": { allow: ["client"], parse: any, handle: () => gate.then(() => "done") },
  }, { concurrency: 1, capacity: 5 });
  let busy = 0;
  const all = Array.from({ length: 20 }, () =>
    client.request("t.wait", {}).then(
      () => "ok",
      (e: DfsError) => (e.code === "BUSY" && busy++, e.code),
    ),
  );
  // 1 running + 5 queued are held at the gate; the other 14 are refused at once.
  await waitFor(() => busy === 14, "14 BUSY answers", 5000, 5);
  open();
  const outcomes = await Promise.all(all);
  assert.equal(outcomes.filter((o) => o === "ok").length, 6);
  assert.equal(outcomes.filter((o) => o === "BUSY").length, 14);
  assert.equal(await client.request("t.wait", {}), "done");
});

test("handler errors come back typed; bad types, shapes and roles are refused", async (t) => {
  const { client } = await setup(t, {
    "t.conflict": { allow: ["client"], parse: any, handle: () => { throw new DfsError("CONFLICT", "nope", { details: { x: 1 } }); } },
    "t.crash": { allow: ["client"], parse: any, handle: () => { throw new TypeError("boom"); } },
    "t.shape": { allow: ["client"], parse: (b) => { if (typeof (b as { n?: unknown })?.n !== "number") throw new DfsError("BAD_REQUEST", "n must be a number"); return b; }, handle: () => "ok" },
    "t.storageOnly": { allow: ["storage"], parse: any, handle: () => "ok" },
  });
  await assert.rejects(client.request("t.conflict", {}), (e: DfsError) => e.code === "CONFLICT" && e.details?.x === 1);
  await assert.rejects(client.request("t.crash", {}), { code: "INTERNAL" });
  await assert.rejects(client.request("t.nothing", {}), { code: "BAD_REQUEST" });
  await assert.rejects(client.request("other.x", {}), { code: "BAD_REQUEST" });
  // Before a node's roles are all in, the same message may be for one still starting.
  const starting = new Router();
  await assert.rejects(starting.dispatch("other.x", {}, client), { code: "UNAVAILABLE" });
  await assert.rejects(client.request("t.shape", { n: "1" }), { code: "BAD_REQUEST" });
  assert.equal(await client.request("t.shape", { n: 1 }), "ok");
  await assert.rejects(client.request("t.storageOnly", {}), { code: "FORBIDDEN" });
});

test("requests time out, can be aborted, and fail UNAVAILABLE when the connection closes", async (t) => {
  const { client, server } = await setup(t, {
    "t.never": { allow: ["client"], parse: any, handle: () => new Promise(() => {}) },
  }, { concurrency: 4 });
  await assert.rejects(client.request("t.never", {}, { timeoutMs: 50 }), { code: "TIMEOUT" });
  const ac = new AbortController();
  const aborted = client.request("t.never", {}, { signal: ac.signal });
  ac.abort();
  await assert.rejects(aborted, { code: "CANCELLED" });
  const pending = client.request("t.never", {});
  await server.close();
  await assert.rejects(pending, { code: "UNAVAILABLE" });
});

test("the TLS handshake refuses a peer with no certificate or one from another CA", async (t) => {
  const { server, certs } = await setup(t, {});
  const other = path.join(tmpDir(t), "other");
  await initCerts({ dir: other });
  const alien = loadCerts(other, "client");
  await assert.rejects(connect(server.url, { tls: alien, log, timeoutMs: 5000 }), { code: "UNAVAILABLE" });
  // Trusts the server through our CA, but shows no certificate of its own.
  const bare = new WebSocket(server.url, { ca: loadCerts(certs, "client").ca, minVersion: "TLSv1.3" });
  const outcome = await new Promise<string>((resolve) => {
    bare.once("open", () => resolve("open"));
    bare.once("error", (e) => resolve(`error: ${e.message}`));
    bare.once("close", () => resolve("closed"));
  });
  bare.terminate();
  assert.notEqual(outcome, "open");
  assert.equal(server.connections, 1, "only the good client stays connected");
});

test("a link reconnects with backoff and re-registers after the server restarts", async (t) => {
  const certs = path.join(tmpDir(t), "certs");
  await initCerts({ dir: certs });
  let registrations = 0;
  const router = new Router();
  router.add(new Actor({ name: "t", prefix: "t.", concurrency: 1, handlers: { "t.register": { allow: ["storage"], parse: any, handle: () => ++registrations } } }));
  let server = await listen({ host: "127.0.0.1", port: 0, tls: loadCerts(certs, "directory"), router, log });
  const port = server.port;
  const link = new Link({
    urls: [server.url], tls: loadCerts(certs, "storage"), log, minBackoffMs: 20, maxBackoffMs: 200,
    onConnect: async (p) => void (await p.request("t.register", {})),
  }).start();
  t.after(() => link.close());
  await waitFor(() => registrations === 1, "first registration");
  await server.close();
  await waitFor(() => !link.up, "link down");
  server = await listen({ host: "127.0.0.1", port, tls: loadCerts(certs, "directory"), router, log });
  t.after(() => server.close());
  await waitFor(() => registrations === 2 && link.up, "re-registration");
});

test("a link with several addresses comes up on one that answers and moves to the next when it fails", async (t) => {
  const certs = path.join(tmpDir(t), "certs");
  await initCerts({ dir: certs });
  const spare = await freeAddress();
  /** A server counting the registrations it received. */
  const serve = async (port: number) => {
    const counter = { registrations: 0 };
    const router = new Router();
    router.add(new Actor({ name: "t", prefix: "t.", concurrency: 1, handlers: { "t.register": { allow: ["storage"], parse: any, handle: () => ++counter.registrations } } }));
    router.ready();
    const server = await listen({ host: "127.0.0.1", port, tls: loadCerts(certs, "directory"), router, log });
    t.after(() => server.close());
    return { server, counter };
  };
  const a = await serve(0);
  // Nothing listens at the first address: the link must not stop there.
  const link = new Link({
    urls: [spare, a.server.url], tls: loadCerts(certs, "storage"), log, minBackoffMs: 20, maxBackoffMs: 200,
    onConnect: async (p) => void (await p.request("t.register", {})),
  }).start();
  t.after(() => link.close());
  await link.ready({ failFast: true, timeoutMs: 5000 });
  assert.equal(link.url, a.server.url);
  await waitFor(() => a.counter.registrations === 1, "registered at the address that answers");
  // The server goes away for good and another comes up at the first address: the link follows and registers there.
  await a.server.close();
  const b = await serve(Number(new URL(spare).port));
  await waitFor(() => b.counter.registrations === 1 && link.up, "re-registered at the other address");
  assert.equal(link.url, spare);
  assert.equal(a.counter.registrations, 1);
  assert.equal(await link.request("t.register", {}), 2, "requests go to the address the link holds now");
});

test("a link none of whose addresses answers fails fast with the cause for each", async (t) => {
  const certs = path.join(tmpDir(t), "certs");
  await initCerts({ dir: certs });
  const [x, y] = [await freeAddress(), await freeAddress()];
  const link = new Link({ urls: [x, y], tls: loadCerts(certs, "client"), log, what: "directory" }).start();
  t.after(() => link.close());
  const started = Date.now();
  const err: DfsError = await link.ready({ failFast: true, timeoutMs: 30_000 }).then(() => assert.fail("came up"), (e: DfsError) => e);
  assert.equal(err.code, "UNAVAILABLE");
  assert.ok(err.message.includes(x) && err.message.includes(y), err.message);
  assert.ok(Date.now() - started < 10_000, "one round over the addresses, not the whole deadline");
});

test("a large binary body leaves in two fragments that decode to the same envelope, copying nothing", () => {
  const data = Buffer.alloc(300_000, 7);
  const env = { kind: Kind.Request, id: 42, type: "store.put", body: { hash: "h", data, chain: ["wss://a:1"] } } as const;
  const parts = encodeParts(env);
  assert.ok(Array.isArray(parts), "split in two");
  assert.equal(parts[1], data, "the payload is the caller's buffer itself");
  const back = decode(Buffer.concat([parts[0], parts[1]]));
  assert.deepEqual(back, env);
  // Small bodies stay one frame.
  assert.ok(!Array.isArray(encodeParts({ kind: Kind.Reply, id: 1, body: { data: Buffer.alloc(10) } })));
});
