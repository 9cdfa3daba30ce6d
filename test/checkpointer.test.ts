import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { DfsClient } from "../src/roles/client.js";
import { logger } from "../src/log.js";
import { snapshotGen } from "../src/roles/directory/snapshot-file.js";
import { startCluster, tmpDir, waitFor, type Cluster } from "./helpers/cluster.js";

// Snapshots are built by a checkpointer process (the same program, a hidden command) while the directory
// only starts a new journal. A checkpointer that dies, or a directory killed during a checkpoint, must
// leave metadata that starts with every acknowledged write.

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Writes small files until stopped, remembering those whose write succeeded. */
async function writeStream(client: DfsClient, stop: () => boolean, acked: Map<string, string>): Promise<void> {
  for (let i = 0; !stop() && i < 100_000; i++) {
    const data = randomBytes(300 + (i % 5) * 100);
    try {
      await client.write(`/s/${i}`, [data]);
      acked.set(`/s/${i}`, sha(data));
    } catch {
      // the directory is down for a moment; only acknowledged writes must survive
    }
  }
}

/** The pid of the next checkpoint the directory starts after `from` characters of its log, and where its line ends. */
async function nextCheckpoint(c: Cluster, from: number): Promise<{ pid: number; at: number }> {
  const re = /checkpoint-started gen=\d+ pid=(\d+)/g;
  const m = await waitFor(() => {
    re.lastIndex = from;
    return re.exec(c.directory.stderr);
  }, "a checkpoint to start", 60_000, 5);
  return { pid: Number(m[1]), at: re.lastIndex };
}

test("a killed checkpointer is retried; a directory killed during a checkpoint restarts with every acknowledged write", { timeout: 300_000 }, async (t) => {
  const c = await startCluster(t, { storage: 3, directoryArgs: ["--snapshot-every", "30"] });
  const meta = path.join(c.root, "directory", "meta");
  const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(tmpDir(t), "cache"), log: logger("test") });
  t.after(() => client.close());
  const acked = new Map<string, string>();
  let stop = false;
  const writer = writeStream(client, () => stop, acked);
  t.after(() => void (stop = true));

  // The checkpointer crashes: the directory says so, keeps serving, and the next checkpoint succeeds.
  const first = await nextCheckpoint(c, 0);
  process.kill(first.pid, "SIGKILL");
  await waitFor(() => /snapshot-failed .*killed by SIGKILL/.test(c.directory.stderr.slice(first.at)), "the failed checkpoint is logged");
  await waitFor(() => /snapshot-written gen=\d+/.test(c.directory.stderr.slice(first.at)), "a later checkpoint");
  const installed = (await snapshotGen(path.join(meta, "snapshot.db")))!;
  assert.ok(installed >= 3, `snapshot generation ${installed}`);

  // Freeze the next checkpointer mid-run, kill the directory under it, then let it go on alone.
  let frozen: number | undefined;
  let from = c.directory.stderr.length;
  while (frozen === undefined) {
    const next = await nextCheckpoint(c, from);
    from = next.at;
    try {
      process.kill(next.pid, "SIGSTOP");
      frozen = next.pid;
    } catch {
      // it finished already: take the next one
    }
  }
  await c.directory.kill("SIGKILL");
  const ackedAtKill = acked.size;
  stop = true;
  const genAtKill = await snapshotGen(path.join(meta, "snapshot.db"));
  process.kill(frozen, "SIGCONT");
  await waitFor(() => !alive(frozen!), "the orphaned checkpointer exits");
  assert.equal(await snapshotGen(path.join(meta, "snapshot.db")), genAtKill, "an orphaned checkpointer installs nothing");

  await c.startDirectory(Number(new URL(c.dirUrl).port));
  await writer;
  await c.waitUp(3);
  assert.ok(ackedAtKill > 30, `${ackedAtKill} writes acknowledged`);
  for (const [p, hash] of acked) assert.equal((await client.stat(p)).sha256, hash, p);
  assert.deepEqual(fs.readdirSync(meta).filter((n) => n.endsWith(".tmp")), [], "no half-written snapshot is left");
});
