import assert from "node:assert/strict";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { loadCerts } from "../src/certs/index.js";
import type { DfsError } from "../src/protocol/errors.js";
import { DfsClient } from "../src/roles/client.js";
import { logger } from "../src/log.js";
import { startCluster, tmpDir, waitFor, type Proc } from "./helpers/cluster.js";

/** Lease of every client here: renewed every 2 s, so a renewal may fail twice while its lock process is gone. */
const TTL_MS = 6000;

/**
 * A TCP relay to the directory that can be shut: the lock process that reaches the directory through it then
 * drops out of the directory's view (and of `dir.hello`), while its clients stay connected to it.
 */
class Gate {
  private shut = false;
  private readonly sockets = new Set<net.Socket>();

  private constructor(readonly url: string) {}

  static async start(t: TestContext, target: string): Promise<Gate> {
    const { hostname, port } = new URL(target);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const gate = new Gate(`wss://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    server.on("connection", (down) => {
      if (gate.shut) return void down.destroy();
      const up = net.connect(Number(port), hostname);
      for (const s of [down, up]) {
        gate.sockets.add(s);
        s.on("error", () => {});
        s.on("close", () => {
          gate.sockets.delete(s);
          down.destroy();
          up.destroy();
        });
      }
      down.pipe(up).pipe(down);
    });
    t.after(async () => {
      gate.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    return gate;
  }

  /** Cuts every connection through the gate and refuses new ones. */
  close(): void {
    this.shut = true;
    for (const s of this.sockets) s.destroy();
  }

  open(): void {
    this.shut = false;
  }
}

interface TwoLocks {
  lockA: Proc;
  /** Clients whose lock link goes to lock process A, and to B. */
  onA: DfsClient[];
  onB: DfsClient[];
  /** A client for everything but locks. */
  probe: DfsClient;
}

/**
 * A directory, one storage node and two lock processes A and B, with `perSide` clients on each. A client's
 * lock link goes where `dir.hello` sends it at its first lock request and stays there, so each side's clients
 * take a lock while only their lock process is in the directory's view.
 */
async function twoLockProcesses(t: TestContext, perSide: number): Promise<TwoLocks> {
  const c = await startCluster(t, { storage: 1, replicas: 1 });
  const work = tmpDir(t);
  const tls = loadCerts(c.certs, "client");
  const clients: DfsClient[] = [];
  t.after(() => Promise.all(clients.map((x) => x.close())));
  const client = (name: string) => {
    const x = new DfsClient({ directoryUrls: [c.dirUrl], tls, cacheDir: path.join(work, name), log: logger(name), lockTtlMs: TTL_MS });
    clients.push(x);
    return x;
  };
  const probe = client("probe");
  const upLocks = async () => (await probe.status()).nodes.filter((n) => n.role === "lock" && n.state === "up").map((n) => n.url).sort().join(" ");
  const onlyUp = (urls: string[], what: string) => waitFor(async () => (await upLocks()) === [...urls].sort().join(" "), what);
  const side = (name: string) => Promise.all(Array.from({ length: perSide }, async (_, i) => {
    const x = client(`${name}${i}`);
    await x.lock(`/warm-${name}${i}`);
    await x.unlock(`/warm-${name}${i}`);
    return x;
  }));

  const gate = await Gate.start(t, c.dirUrl);
  await c.lock.kill();
  const lockA = await c.startLock({ name: "lock-a", directory: gate.url });
  await onlyUp([lockA.url], "only lock process A up");
  const onA = await side("a");
  gate.close();
  await onlyUp([], "lock process A out of the directory's view");
  const lockB = await c.startLock({ name: "lock-b" });
  await onlyUp([lockB.url], "only lock process B up");
  const onB = await side("b");
  gate.open();
  await onlyUp([lockA.url, lockB.url], "both lock processes up");
  return { lockA, onA, onB, probe };
}

/** Whether a promise has settled yet, without letting its rejection go unhandled. */
function settledFlag(p: Promise<unknown>): () => boolean {
  let settled = false;
  p.then(() => (settled = true), () => (settled = true));
  return () => settled;
}

/** What the client shows others as a lock's holder. */
function owner(): string {
  let user = "unknown";
  try {
    user = os.userInfo().username;
  } catch {
    // As the client does without a passwd entry.
  }
  return `${user}@${os.hostname()}`;
}

test("clients on two lock processes racing for one path: one holder at a time, tokens grow, no update lost", { timeout: 600_000 }, async (t) => {
  const { onA, onB, probe } = await twoLockProcesses(t, 3);
  const ROUNDS = 15;
  await probe.write("/n", [Buffer.from("0")]);
  const read = async (x: DfsClient) => {
    const parts: Buffer[] = [];
    await x.read("/n", async (d) => void parts.push(d));
    return Number(Buffer.concat(parts).toString());
  };
  const held: { who: string; token: number; from: number; to: number }[] = [];
  const increment = async (x: DfsClient, who: string) => {
    const lease = await x.lock("/n", { waitMs: 60_000 });
    const from = Date.now();
    const n = await read(x);
    // Committed with the lease's token: the directory takes it only while that lease is the path's.
    await x.write("/n", [Buffer.from(String(n + 1))]);
    held.push({ who, token: lease.token, from, to: Date.now() });
    await x.unlock("/n");
  };
  // All clients race in every round: a lock process hands its waiters the lock one after the other, so clients
  // running freely would rarely see the lock pass between the processes, but each round it must, both ways.
  for (let round = 0; round < ROUNDS; round++) {
    await Promise.all([...onA.map((x, i) => increment(x, `a${i}`)), ...onB.map((x, i) => increment(x, `b${i}`))]);
  }
  assert.equal(await read(probe), 6 * ROUNDS, "every increment counted");
  assert.equal(held.length, 6 * ROUNDS);
  held.sort((a, b) => a.from - b.from);
  for (let k = 1; k < held.length; k++) {
    const [a, b] = [held[k - 1]!, held[k]!];
    assert.ok(b.from >= a.to, `${b.who} (token ${b.token}) got the lock at ${b.from} while ${a.who} (token ${a.token}) held it until ${a.to}`);
    assert.ok(b.token > a.token, `tokens grow with every grant (${a.token} then ${b.token})`);
  }
});

test("a waiter on one lock process gets the lock once the holder on the other releases it", { timeout: 300_000 }, async (t) => {
  const { onA: [a], onB: [b] } = await twoLockProcesses(t, 1);
  const first = await a!.lock("/w");
  const waiting = b!.lock("/w", { waitMs: 60_000 });
  const settled = settledFlag(waiting);
  // Time for B to be refused by the directory and to poll a few times; the check below holds either way.
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(settled(), false, "no grant while the holder on the other lock process has the lock");
  const released = Date.now();
  await a!.unlock("/w");
  const second = await waiting;
  assert.ok(second.token > first.token, `${second.token} > ${first.token}`);
  assert.ok(Date.now() - released < 10_000, "B found the lock free by asking the directory again");
});

test("a lock process killed with -9: its client renews through the other with the same token, writes and releases", { timeout: 300_000 }, async (t) => {
  const { lockA, onA: [a], onB: [b] } = await twoLockProcesses(t, 1);
  const lease = await a!.lock("/k");
  const waiting = b!.lock("/k", { waitMs: 120_000 });
  const settled = settledFlag(waiting);
  const killed = Date.now();
  await lockA.kill("SIGKILL");
  // Renewed through A, the lease would end by killed + TTL_MS at the latest: only B can have renewed it later.
  await waitFor(() => lease.expiresAt > killed + TTL_MS, "a renewal through lock process B", 30_000);
  assert.equal(lease.lost, undefined);
  await a!.write("/k", [Buffer.from("written under a lease renewed elsewhere")]);
  assert.equal(lease.lost, undefined, "held throughout");
  assert.equal(settled(), false, "no one else got the lock meanwhile");
  await a!.unlock("/k");
  const next = await waiting;
  assert.ok(next.token > lease.token, `${next.token} > ${lease.token}`);
});

test("a claimant that cannot wait is told LOCKED naming the holder on the other lock process", { timeout: 300_000 }, async (t) => {
  const { onA: [a], onB: [b] } = await twoLockProcesses(t, 1);
  for (const [holder, other] of [[a!, b!], [b!, a!]] as const) {
    await holder.lock("/z");
    await assert.rejects(other.lock("/z"), (e: DfsError) => {
      assert.equal(e.code, "LOCKED");
      assert.equal(e.details?.holder, owner());
      assert.ok(Number(e.details?.remainingMs) > 0, "says how long the lease still runs");
      assert.match(e.message, /\/z is locked by .+ until \d{4}-/);
      return true;
    });
    await holder.unlock("/z");
  }
});
