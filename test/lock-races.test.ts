import assert from "node:assert/strict";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { loadCerts } from "../src/certs/index.js";
import type { DfsError } from "../src/protocol/errors.js";
import type { LockGrant } from "../src/protocol/lock.js";
import { DfsClient } from "../src/roles/client.js";
import { connect } from "../src/transport/connect.js";
import { logger } from "../src/log.js";
import { startCluster, tmpDir, waitFor, type Cluster } from "./helpers/cluster.js";

/** Rounds per client: 12 x 90 grants cross the 1,000th, where tokens used to be reserved in blocks. */
const ROUNDS = 90;
const session = (i: number) => `test-session-${String(i).padStart(8, "0")}`;

async function lockUrl(c: Cluster): Promise<string> {
  return waitFor(async () => (await c.status()).nodes.find((n) => n.role === "lock" && n.state === "up")?.url, "lock service up");
}

/** Two library clients "a" and "b" of cluster `c` with leases of `lockTtlMs`, closed after the test. */
function twoClients(t: TestContext, c: Cluster, work: string, lockTtlMs: number): [DfsClient, DfsClient] {
  const mk = (n: string) => new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(work, n), log: logger(n), lockTtlMs });
  const pair: [DfsClient, DfsClient] = [mk("a"), mk("b")];
  t.after(() => Promise.all(pair.map((x) => x.close())));
  return pair;
}

test("many clients racing for one lock, past a thousand grants and through a lock service restart: never two holders at once", { timeout: 300_000 }, async (t) => {
  const c = await startCluster(t, { storage: 1 });
  const work = tmpDir(t);
  // The first grants after a restart are the ones that used to race with the token reservation.
  await c.lock.kill("SIGKILL");
  await c.startLock();
  await lockUrl(c);
  const clients = Array.from({ length: 12 }, (_, i) => new DfsClient({
    directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(work, `c${i}`), log: logger(`c${i}`),
  }));
  t.after(() => Promise.all(clients.map((x) => x.close())));
  const held: { who: number; token: number; from: number; to: number }[] = [];
  let restarted = false;
  const worker = async (i: number) => {
    for (let round = 0; round < ROUNDS; round++) {
      for (;;) {
        try {
          const lease = await clients[i]!.lock("/L", { waitMs: 30_000 });
          const from = Date.now();
          await new Promise((r) => setTimeout(r, 2));
          const to = Date.now();
          held.push({ who: i, token: lease.token, from, to });
          await clients[i]!.unlock("/L");
          break;
        } catch (err) {
          // A restart of the lock service ends queued requests; the client asks again.
          if ((err as DfsError).code !== "UNAVAILABLE") throw err;
        }
      }
      if (i === 0 && round === ROUNDS / 2 && !restarted) {
        restarted = true;
        await c.lock.kill("SIGKILL");
        await c.startLock();
      }
    }
  };
  await Promise.all(clients.map((_, i) => worker(i)));
  assert.equal(held.length, 12 * ROUNDS);
  held.sort((a, b) => a.from - b.from);
  for (let k = 1; k < held.length; k++) {
    const [a, b] = [held[k - 1]!, held[k]!];
    assert.ok(b.from >= a.to, `client ${b.who} (token ${b.token}) got the lock at ${b.from} while client ${a.who} (token ${a.token}) held it until ${a.to}`);
    assert.ok(b.token > a.token, `tokens grow with every grant (${a.token} then ${b.token})`);
  }
});

test("a waiter whose deadline passed while the lock service was stalled is answered LOCKED", async (t) => {
  const c = await startCluster(t, { storage: 1 });
  const tls = loadCerts(c.certs, "client");
  const url = await lockUrl(c);
  const a = await connect(url, { tls, log: logger("a") });
  const b = await connect(url, { tls, log: logger("b") });
  t.after(() => (a.close(), b.close()));
  await a.request<LockGrant>("lock.acquire", { path: "/w", ttlMs: 1000, session: session(1) });
  const waiting = b.request("lock.acquire", { path: "/w", waitMs: 1500, session: session(2) }, { timeoutMs: 60_000 });
  waiting.catch(() => {});
  await new Promise((r) => setTimeout(r, 100)); // the waiter is queued behind the holder
  // Stalled past both the holder's lease end and the waiter's deadline: on waking, the lease ends first.
  c.lock.child.kill("SIGSTOP");
  await new Promise((r) => setTimeout(r, 2500));
  c.lock.child.kill("SIGCONT");
  const started = Date.now();
  await assert.rejects(waiting, (e: DfsError) => {
    assert.equal(e.code, "LOCKED");
    return true;
  });
  assert.ok(Date.now() - started < 10_000, "answered once the service woke, not at the request's own timeout");
});

test("while a path is leased, only its holder may change it: rm, mv, commits and transactions of others get LOCKED", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  const put = (p: string, text: string) => c.client(["write", p, "-"], { stdin: text, cwd: work });
  assert.equal((await put("/p", "holder's data")).code, 0);
  assert.equal((await put("/other", "other data")).code, 0);
  const tls = loadCerts(c.certs, "client");
  const holder = new DfsClient({ directoryUrls: [c.dirUrl], tls, cacheDir: path.join(work, "h"), log: logger("holder") });
  t.after(() => holder.close());
  const lease = await holder.lock("/p");

  for (const args of [["rm", "/p"], ["mv", "/p", "/q"], ["mv", "/other", "/p"]]) {
    const r = await c.client(args);
    assert.equal(r.code, 1, `${args.join(" ")} must be refused`);
    assert.match(r.stderr, /\/p is locked by .+ until \d{4}-/);
  }
  const raw = await connect(c.dirUrl, { tls, log: logger("raw") });
  t.after(() => raw.close());
  const info = await holder.stat("/other");
  const file = (p: string) => ({ path: p, size: info.size, sha256: info.sha256, chunks: info.chunks.map((x) => x.hash) });
  await assert.rejects(raw.request("dir.commit", { files: [file("/p")] }), { code: "LOCKED" });
  await assert.rejects(raw.request("dir.commit", { files: [file("/fresh"), file("/p")], session: session(9) }), { code: "LOCKED" });
  assert.equal((await c.client(["stat", "/fresh"])).code, 1, "a refused transaction commits none of its files");

  // Renewal and release belong to the holder, whoever knows the token.
  const lock = await connect(await lockUrl(c), { tls, log: logger("raw-lock") });
  t.after(() => lock.close());
  await assert.rejects(lock.request("lock.renew", { path: "/p", token: lease.token, session: session(3) }), { code: "FORBIDDEN" });
  await assert.rejects(lock.request("lock.release", { path: "/p", token: lease.token, session: session(3) }), { code: "FORBIDDEN" });

  await holder.write("/p", [Buffer.from("holder's second version")]);
  await holder.rm("/other");
  await holder.unlock("/p");
  assert.equal((await c.client(["cat", "/p"])).stdout, "holder's second version");
  assert.equal((await c.client(["rm", "/p"])).code, 0, "free once released");
});

test("a token the lock service never issued is refused and fences nothing", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  assert.equal((await c.client(["write", "/t", "-"], { stdin: "one", cwd: work })).code, 0);
  const tls = loadCerts(c.certs, "client");
  const raw = await connect(c.dirUrl, { tls, log: logger("raw") });
  t.after(() => raw.close());
  const info = JSON.parse((await c.client(["stat", "--json", "/t"])).stdout);
  const file = { path: "/t", size: info.size, sha256: info.sha256, chunks: info.chunks.map((x: { hash: string }) => x.hash), token: Number.MAX_SAFE_INTEGER };
  await assert.rejects(raw.request("dir.commit", { files: [file] }), { code: "STALE_TOKEN" });
  await assert.rejects(raw.request("dir.remove", { path: "/t", token: Number.MAX_SAFE_INTEGER }), { code: "STALE_TOKEN" });
  const again = await c.client(["write", "/t", "-"], { stdin: "two", cwd: work });
  assert.equal(again.code, 0, again.stderr);
  assert.equal((await c.client(["cat", "/t"])).stdout, "two");
});

test("a lock released while the directory was down stays released when the directory comes back", async (t) => {
  const c = await startCluster(t, { storage: 1 });
  const work = tmpDir(t);
  // A long lease: were it taken back from the directory, it would outlast the test.
  const [a, b] = twoClients(t, c, work, 120_000);
  await a.lock("/r");
  const port = Number(new URL(c.dirUrl).port);
  await c.directory.kill("SIGKILL");
  await a.unlock("/r"); // the lock service lets go; it cannot tell the directory yet
  await c.startDirectory(port);
  await lockUrl(c);
  // The lock service tells the directory once it is back, instead of taking the lease back from it.
  const lease = await waitFor(() => b.lock("/r"), "the lock free for another client", 8000);
  assert.ok(lease.token > 0);
});

test("a lock granted after waiting longer than a lease is held from the grant on, not lost at once", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const work = tmpDir(t);
  const [a, b] = twoClients(t, c, work, 1000);
  await a.lock("/q");
  const waiting = b.lock("/q", { waitMs: 10_000 });
  await new Promise((r) => setTimeout(r, 2500)); // the holder renews its 1 s lease meanwhile
  await a.unlock("/q");
  const lease = await waiting;
  assert.equal(lease.lost, undefined, "held, although the wait outlasted a whole lease");
  await b.write("/q", [Buffer.from("written under the waited-for lock")]);
  assert.equal(lease.lost, undefined);
  await b.unlock("/q");
});
