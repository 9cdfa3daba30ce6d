import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import path from "node:path";
import test, { type TestContext } from "node:test";
import { initCerts, loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import { DfsClient } from "../src/roles/client.js";
import type { StatusReply } from "../src/protocol/directory.js";
import { Proc, runDfs, spawnDfs, tmpDir, waitFor } from "./helpers/cluster.js";
import { multiHostUrl, startPostgres, startStandby } from "./helpers/postgres.js";

const DEAD_AFTER_S = 3;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Directory processes, lock processes and storage nodes over one PostgreSQL database, every node given every directory. */
async function pgCluster(t: TestContext, n: { directories: number; locks: number; storage: number }, pgUrl: string) {
  const root = tmpDir(t, "dfs-pg-cluster-");
  const certs = path.join(root, "certs");
  await initCerts({ dir: certs });
  const common = ["--certs", certs, "--dead-after", String(DEAD_AFTER_S)];
  const dirs: Proc[] = [];
  for (let i = 0; i < n.directories; i++) {
    const p = spawnDfs(t, ["--role", "directory", "--port", "0", "--data", path.join(root, `dir-${i}`), "--metadata", pgUrl, ...common]);
    await p.listening();
    dirs.push(p);
  }
  const list = dirs.map((d) => d.url).join(",");
  const node = (role: string, i: number) => spawnDfs(t, ["--role", role, "--port", "0", "--data", path.join(root, `${role}-${i}`), "--directory", list, ...common]);
  const locks = Array.from({ length: n.locks }, (_, i) => node("lock", i));
  const storage = Array.from({ length: n.storage }, (_, i) => node("storage", i));
  await Promise.all([...locks, ...storage].map((p) => p.listening()));
  const status = async (): Promise<StatusReply> => {
    const r = await runDfs(t, ["--role", "client", "--directory", list, "--certs", certs, "--cache", path.join(root, "status-cache"), "status", "--json"]);
    if (r.code !== 0) throw new Error(r.stderr);
    return JSON.parse(r.stdout) as StatusReply;
  };
  await waitFor(async () => {
    const s = await status();
    const up = (role: string) => s.nodes.filter((x) => x.role === role && x.state === "up").length;
    return up("storage") === n.storage && up("lock") === n.locks;
  }, "every node up", 60_000);
  const client = (name: string) => new DfsClient({
    directoryUrls: dirs.map((d) => d.url), tls: loadCerts(certs, "client"), cacheDir: path.join(root, `cache-${name}`), log: logger(name), lockTtlMs: 3000,
  });
  return { root, certs, dirs, locks, storage, status, client };
}

test("two directories, two lock services, three storage nodes on PostgreSQL: kill -9 a directory, then a lock service, under writes from several clients", { timeout: 300_000 }, async (t) => {
  const pg = await startPostgres(t);
  const c = await pgCluster(t, { directories: 2, locks: 2, storage: 3 }, pg.url);
  const clients = Array.from({ length: 3 }, (_, i) => c.client(`c${i}`));
  t.after(() => Promise.all(clients.map((x) => x.close())));
  for (const x of clients) await x.connect();

  const acked = new Map<string, string>();
  const grants: { token: number; at: number }[] = [];
  let increments = 0;
  let attempted = 0;
  let stop = false;
  const lastOk = clients.map(() => 0);
  const loops = clients.map(async (cl, i) => {
    for (let n = 0; !stop; n++) {
      try {
        const data = randomBytes(1000 + ((n * 7919) % 50_000));
        const file = `/w${i}/${n}`;
        await cl.write(file, [data]);
        acked.set(file, sha(data));
        // A counter under the lock: a lost update or two holders would show as a wrong count.
        const lease = await cl.lock("/counter", { waitMs: 20_000 });
        grants.push({ token: lease.token, at: Date.now() });
        attempted++;
        let v = 0;
        try {
          const parts: Buffer[] = [];
          await cl.read("/counter", async (b) => void parts.push(Buffer.from(b)));
          v = Number(Buffer.concat(parts).toString());
        } catch (err) {
          if ((err as { code?: string }).code !== "NOT_FOUND") throw err;
        }
        await cl.write("/counter", [Buffer.from(String(v + 1))]);
        increments++;
        await cl.unlock("/counter");
        lastOk[i] = Date.now();
      } catch {
        // Failures are allowed while a process is down; what was acknowledged is checked at the end.
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
  const carryOn = async (what: string) => {
    const since = Date.now();
    await waitFor(() => lastOk.every((at) => at > since), `every client writing again after ${what}`, (DEAD_AFTER_S + 5) * 1000 + 20_000);
    return (Math.max(...lastOk) - since) / 1000;
  };
  await waitFor(() => increments >= 6, "writes under way", 60_000);

  await c.dirs[0]!.kill("SIGKILL");
  const afterDir = await carryOn("a directory was killed");
  await c.locks[0]!.kill("SIGKILL");
  const afterLock = await carryOn("a lock service was killed");
  t.diagnostic(`clients carried on within ${afterDir.toFixed(1)} s after the directory and ${afterLock.toFixed(1)} s after the lock service`);
  stop = true;
  await Promise.all(loops);

  // Every acknowledged write reads back byte-identical, through the directory that is left.
  const check = c.client("check");
  t.after(() => check.close());
  for (const [file, hash] of acked) {
    const parts: Buffer[] = [];
    await check.read(file, async (b) => void parts.push(Buffer.from(b)));
    assert.equal(sha(Buffer.concat(parts)), hash, `${file} reads back as written`);
  }
  const parts: Buffer[] = [];
  await check.read("/counter", async (b) => void parts.push(Buffer.from(b)));
  const counter = Number(Buffer.concat(parts).toString());
  // An increment whose outcome was unknown may or may not have landed; none acknowledged may be missing.
  assert.ok(counter >= increments && counter <= attempted, `counter ${counter}: ${increments} acknowledged, ${attempted} attempted`);
  // Fencing tokens never go backwards: each grant's token is above every earlier grant's.
  grants.sort((a, b) => a.at - b.at);
  for (let i = 1; i < grants.length; i++) assert.ok(grants[i]!.token > grants[i - 1]!.token, `grant ${i}: token ${grants[i]!.token} after ${grants[i - 1]!.token}`);
  assert.ok(acked.size > 20, `${acked.size} writes acknowledged`);
});

test("PostgreSQL primary killed during writes, its synchronous standby promoted: no acknowledged write lost, directories reconnect by themselves", { timeout: 300_000 }, async (t) => {
  const primary = await startPostgres(t);
  const standby = await startStandby(t, primary, { sync: true });
  const c = await pgCluster(t, { directories: 2, locks: 1, storage: 3 }, multiHostUrl(primary, standby));
  const clients = Array.from({ length: 2 }, (_, i) => c.client(`c${i}`));
  t.after(() => Promise.all(clients.map((x) => x.close())));
  const acked = new Map<string, string>();
  let stop = false;
  let lastOk = 0;
  const loops = clients.map(async (cl, i) => {
    for (let n = 0; !stop; n++) {
      const data = randomBytes(500 + ((n * 7919) % 20_000));
      try {
        await cl.write(`/f${i}/${n}`, [data]);
        acked.set(`/f${i}/${n}`, sha(data));
        lastOk = Date.now();
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
  await waitFor(() => acked.size >= 10, "writes under way", 60_000);
  const before = acked.size;
  await primary.kill("SIGKILL");
  await standby.promote();
  const promoted = Date.now();
  await waitFor(() => lastOk > promoted + 1000 && acked.size > before + 5, "writes resumed on the promoted standby", 60_000);
  stop = true;
  await Promise.all(loops);
  for (const d of c.dirs) assert.ok(d.alive, `a directory process exited: ${d.stderr.slice(-2000)}`);
  const check = c.client("check");
  t.after(() => check.close());
  for (const [file, hash] of acked) {
    const parts: Buffer[] = [];
    await check.read(file, async (b) => void parts.push(Buffer.from(b)));
    assert.equal(sha(Buffer.concat(parts)), hash, `${file} reads back as written`);
  }
  const rows = await standby.query("SELECT COUNT(*)::int AS n FROM files");
  assert.ok(Number(rows[0]!.n) >= acked.size, "every acknowledged file is in the promoted database");
});

test("two directory+lock processes on PostgreSQL, two clients each on its own one, racing on one path: never two holders, never a lost update", { timeout: 240_000 }, async (t) => {
  const pg = await startPostgres(t);
  const root = tmpDir(t, "dfs-pg-race-");
  const certs = path.join(root, "certs");
  await initCerts({ dir: certs });
  const common = ["--certs", certs, "--dead-after", String(DEAD_AFTER_S)];
  const both = [0, 1].map((i) => spawnDfs(t, ["--role", "directory,lock", "--port", "0", "--data", path.join(root, `dl-${i}`), "--metadata", pg.url, ...common]));
  const urls = await Promise.all(both.map((p) => p.listening()));
  const storage = [0, 1, 2].map((i) => spawnDfs(t, ["--role", "storage", "--port", "0", "--data", path.join(root, `s-${i}`), "--directory", urls.join(","), ...common]));
  await Promise.all(storage.map((p) => p.listening()));
  const clients = urls.map((u, i) => new DfsClient({ directoryUrls: [u], tls: loadCerts(certs, "client"), cacheDir: path.join(root, `cache-${i}`), log: logger(`c${i}`), lockTtlMs: 5000 }));
  t.after(() => Promise.all(clients.map((x) => x.close())));
  await waitFor(async () => {
    const s = await clients[0]!.status();
    return s.nodes.filter((n) => n.role === "storage" && n.state === "up").length === 3 && s.nodes.filter((n) => n.role === "lock" && n.state === "up").length === 2;
  }, "both lock services and three storage nodes up", 60_000);

  const held: { who: number; token: number; from: number; to: number }[] = [];
  const ROUNDS = 15;
  await Promise.all(clients.map(async (cl, who) => {
    for (let r = 0; r < ROUNDS; r++) {
      const lease = await cl.lock("/race", { waitMs: 60_000 });
      const from = Date.now();
      let v = 0;
      try {
        const parts: Buffer[] = [];
        await cl.read("/race", async (b) => void parts.push(Buffer.from(b)));
        v = Number(Buffer.concat(parts).toString());
      } catch (err) {
        if ((err as { code?: string }).code !== "NOT_FOUND") throw err;
      }
      await cl.write("/race", [Buffer.from(String(v + 1))]);
      const to = Date.now();
      await cl.unlock("/race");
      held.push({ who, token: lease.token, from, to });
    }
  }));
  const parts: Buffer[] = [];
  await clients[1]!.read("/race", async (b) => void parts.push(Buffer.from(b)));
  assert.equal(Number(Buffer.concat(parts).toString()), 2 * ROUNDS, "every increment counted once: no lost update");
  held.sort((a, b) => a.from - b.from);
  for (let i = 1; i < held.length; i++) {
    const [a, b] = [held[i - 1]!, held[i]!];
    assert.ok(b.from >= a.to, `client ${b.who} (token ${b.token}) held the lock from ${b.from} while client ${a.who} (token ${a.token}) held it until ${a.to}`);
    assert.ok(b.token > a.token, `tokens grow: ${a.token} then ${b.token}`);
  }
});
