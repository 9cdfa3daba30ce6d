import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import test from "node:test";
import { pack, unpack } from "msgpackr";
import { WebSocket } from "ws";
import { loadCerts } from "../src/certs/index.js";
import { Cluster, waitFor } from "./helpers/cluster.js";
import { openRaw } from "./helpers/raw.js";

/** A seeded generator, so a failing run can be repeated with the printed seed. */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

const valid = [
  [0, 1, "dir.status", {}],
  [0, 2, "dir.lookup", { path: "/a" }],
  [0, 3, "dir.place", { chunks: [{ hash: "a".repeat(64), size: 10 }] }],
  [0, 4, "dir.list", { prefix: "/" }],
  [3, 0, "dir.heartbeat", { free: 1, used: 1, chunks: 1 }],
];

/** Frames a hostile or broken peer might send. */
function frames(n: number, rand: () => number): Buffer[] {
  const out: Buffer[] = [];
  const pick = <T>(a: T[]) => a[Math.floor(rand() * a.length)]!;
  const specials = [
    Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff]), // array32 claiming 4 billion items
    Buffer.from([0xdf, 0xff, 0xff, 0xff, 0xff, 0x01]), // map32 likewise
    Buffer.from([0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]), // bin32 of 4 GiB
    Buffer.from([0xdb, 0x7f, 0xff, 0xff, 0xff, 0x41]), // str32 of 2 GiB
    Buffer.from([0x94, 0x00, 0x01, 0xdd, 0xff, 0xff, 0xff, 0xff]), // envelope with a huge type
    pack([0, 1, "dir.status"]),
    pack([0, -1, "dir.status", {}]),
    pack([0, 1.5, "dir.status", {}]),
    pack([7, 1, "dir.status", {}]),
    pack([0, 1, 42, {}]),
    pack([0, 1, "x".repeat(1000), {}]),
    pack([0, 1, "dir.lookup", { path: "../../etc/passwd" }]),
    pack([0, 1, "dir.lookup", { path: "/a\u0000b" }]),
    pack([0, 1, "dir.commit", { files: "all" }]),
    pack([0, 1, "dir.place", { chunks: [{ hash: "../x", size: -1 }] }]),
    pack([0, 1, "dir.register", { kind: "storage" }]),
    pack([0, 1, "__proto__", { polluted: true }]),
    pack([0, 1, "dir.status", { __proto__: { admin: true } }]),
    pack({ kind: 0 }),
    pack("hello"),
    pack(null),
    Buffer.alloc(0),
  ];
  for (let i = 0; i < n; i++) {
    const r = rand();
    if (r < 0.3) out.push(randomBytes(1 + Math.floor(rand() * 200)));
    else if (r < 0.5) {
      const f = pack(pick(valid));
      out.push(f.subarray(0, Math.floor(rand() * f.length)));
    } else if (r < 0.8) {
      const f = Buffer.from(pack(pick(valid)));
      for (let k = 0; k < 1 + rand() * 4; k++) f[Math.floor(rand() * f.length)] = Math.floor(rand() * 256);
      out.push(f);
    } else out.push(pick(specials));
  }
  return out;
}

/** Whether our envelope rules call for an answer: everything but well-formed replies, errors and tells. */
function expectsAnswer(frame: Buffer): boolean {
  let v: unknown;
  try {
    v = unpack(frame);
  } catch {
    return true;
  }
  if (!Array.isArray(v) || v.length !== 4) return true;
  const [kind, id, type] = v as unknown[];
  if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= 2 ** 32) return true;
  if (kind === 1 || kind === 2) return false;
  if (kind === 3) return !(typeof type === "string" && type.length > 0 && type.length <= 64);
  return true;
}

test("thousands of random and mutated frames are each refused or answered, and the node keeps serving", async (t) => {
  const c = new Cluster(t, { storage: 1 });
  await c.start();
  const tls = loadCerts(c.certs, "client");
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1e9);
  t.diagnostic(`seed ${seed}`);
  const all = frames(3000, rng(seed));
  let ws = await openRaw(c.dirUrl, tls);
  let answered = 0;
  let expected = 0;
  let closes = 0;
  let probes = 0;
  const PROBE = 0xfffffff0;
  const listen = (sock: WebSocket) =>
    sock.on("message", (data: Buffer) => {
      const [kind, id] = unpack(data) as [number, number];
      assert.ok(kind === 1 || kind === 2, `answer kind ${kind}`);
      if (id === PROBE) probes++;
      else answered++;
    });
  listen(ws);
  for (let i = 0; i < all.length; i += 50) {
    // A batch of fuzz frames, then a probe request; every answer must arrive (with a deadline), none extra.
    const batch = all.slice(i, i + 50);
    let onClose!: () => void;
    const closed = new Promise<boolean>((resolve) => ws.once("close", (onClose = () => resolve(true))));
    const before = { answered, probes };
    for (const f of batch) ws.send(f);
    ws.send(pack([0, PROBE, "dir.status", {}]));
    const want = batch.filter(expectsAnswer).length;
    const done = waitFor(() => probes > before.probes && answered - before.answered >= want, "answers to a batch", 10_000, 5).then(() => false);
    const wasClosed = await Promise.race([done, closed]);
    ws.off("close", onClose);
    if (wasClosed) {
      // The node may drop a peer that misbehaves; what it answered before that still counts.
      closes++;
      expected += answered - before.answered;
      ws = await openRaw(c.dirUrl, tls);
      listen(ws);
      continue;
    }
    expected += want;
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(answered, expected, "every frame that called for an answer got one");

  // Text frames and a frame over the size limit: refused, or the connection closed.
  ws.send("not binary");
  const tooBig = await new Promise<number>((resolve) => {
    ws.once("close", (code) => resolve(code));
    ws.send(Buffer.alloc(18 * 1024 * 1024));
  });
  assert.equal(tooBig, 1009);
  ws.terminate();

  const s = await c.status();
  assert.equal(s.nodes.filter((n) => n.state === "up").length, 2, "the cluster still works for a good client");
  assert.ok(c.directory.alive, "directory process still running");
  t.diagnostic(`frames ${all.length}, answers ${answered}, connections closed ${closes}`);
});
