import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { DfsClient } from "../src/roles/client.js";
import { connect } from "../src/transport/connect.js";
import { logger } from "../src/log.js";
import { startCluster, tmpDir, waitFor } from "./helpers/cluster.js";
import { forEachBackend } from "./helpers/backends.js";

const SESSION = "test-session-0123456789";
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

forEachBackend((metadata) => {
  test("two clients writing one file at once are serialised; the result is one of them, never a mix", async (t) => {
    const c = await startCluster(t, { metadata, storage: 3, directoryArgs: ["--chunk-size", "65536"] });
    const work = tmpDir(t);
    const a = randomBytes(40 * 65536);
    const b = randomBytes(40 * 65536);
    fs.writeFileSync(path.join(work, "a"), a);
    fs.writeFileSync(path.join(work, "b"), b);
    const [ra, rb] = await Promise.all([c.client(["write", "/shared", "a"], { cwd: work }), c.client(["write", "/shared", "b"], { cwd: work })]);
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(rb.code, 0, rb.stderr);
    const versions = [ra.stdout, rb.stdout].map((o) => Number(/ v(\d+) /.exec(o)![1])).sort();
    assert.deepEqual(versions, [1, 2], "each write committed its own version, one after the other");
    const r = await c.client(["read", "/shared", "out"], { cwd: work });
    assert.equal(r.code, 0, r.stderr);
    const got = sha(fs.readFileSync(path.join(work, "out")));
    assert.ok(got === sha(a) || got === sha(b), "content is exactly one of the two writes");
  });

  test("a lock holder killed with -9 no longer blocks others; a stale fencing token is refused", async (t) => {
    const c = await startCluster(t, { metadata, storage: 2 });
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "f"), "hello");
    const holder = c.session(path.join(work, "c1"));
    holder.child.stdin!.write("lock /f\n");
    await waitFor(() => /locked \/f/.test(holder.stdout), "holder has the lock");
    const blocked = await c.client(["lock", "/f"]);
    assert.equal(blocked.code, 1);
    assert.match(blocked.stderr, /\/f is locked by .* until \d{4}-/);
    await holder.kill("SIGKILL");
    const r = await c.client(["write", "/f", "f"], { cwd: work });
    assert.equal(r.code, 0, r.stderr);

    // Fencing: A's lock is lost, B writes with a newer token, then A's late commit must be refused.
    const tls = loadCerts(c.certs, "client");
    const A = new DfsClient({ directoryUrls: [c.dirUrl], tls, cacheDir: path.join(work, "ca"), log: logger("A"), lockTtlMs: 500 });
    const B = new DfsClient({ directoryUrls: [c.dirUrl], tls, cacheDir: path.join(work, "cb"), log: logger("B") });
    t.after(() => A.close());
    t.after(() => B.close());
    const leaseA = await A.lock("/g");
    await A.unlock("/g");
    await B.write("/g", [Buffer.from("from B")]);
    const info = await B.stat("/g");
    const dir = await connect(c.dirUrl, { tls, log: logger("raw") });
    t.after(() => dir.close());
    const late = { path: "/g", size: info.size, sha256: info.sha256, chunks: info.chunks.map((x) => x.hash), token: leaseA.token };
    await assert.rejects(dir.request("dir.commit", { files: [late] }), { code: "STALE_TOKEN" });
    assert.equal((await B.stat("/g")).version, 1);
  });

  test("a waiting writer gets the lock when the lease of a silent holder ends", async (t) => {
    const c = await startCluster(t, { metadata, storage: 2 });
    const tls = loadCerts(c.certs, "client");
    const work = tmpDir(t);
    const A = new DfsClient({ directoryUrls: [c.dirUrl], tls, cacheDir: path.join(work, "a"), log: logger("A"), lockTtlMs: 1000 });
    t.after(() => A.close());
    // Take a lock over a raw connection that never renews: the lease must run out by itself.
    const lockUrl = (await A.status()).nodes.find((n) => n.role === "lock")!.url;
    const raw = await connect(lockUrl, { tls, log: logger("raw") });
    t.after(() => raw.close());
    const g = await raw.request<{ token: number; expiresAt: number }>("lock.acquire", { path: "/h", ttlMs: 800, session: SESSION });
    const lease = await A.lock("/h", { waitMs: 10_000 });
    assert.ok(Date.now() >= g.expiresAt - 50, "granted only once the silent holder's lease ended");
    assert.ok(lease.token > g.token, "fencing tokens grow");
    await assert.rejects(raw.request("lock.renew", { path: "/h", token: g.token, session: SESSION }), { code: "STALE_TOKEN" });
  });

  test("fencing tokens keep growing across a lock service restart", async (t) => {
    const c = await startCluster(t, { metadata, storage: 1 });
    const tls = loadCerts(c.certs, "client");
    const take = async () => {
      const lockUrl = await waitFor(async () => {
        const s = await c.status();
        return s.nodes.find((n) => n.role === "lock" && n.state === "up")?.url;
      }, "lock service up");
      const ch = await connect(lockUrl, { tls, log: logger("raw") });
      try {
        const g = await ch.request<{ token: number }>("lock.acquire", { path: "/t", session: SESSION });
        await ch.request("lock.release", { path: "/t", token: g.token, session: SESSION });
        return g.token;
      } finally {
        ch.close();
      }
    };
    const first = await take();
    await c.lock.kill("SIGKILL");
    await c.startLock();
    const second = await take();
    assert.ok(second > first, `${second} > ${first}`);
  });
});
