import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { DfsClient } from "../src/roles/client.js";
import { logger } from "../src/log.js";
import { startCluster, tmpDir, waitFor, type Cluster } from "./helpers/cluster.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** Writes small files until stopped, remembering those whose write call succeeded. */
async function writeStream(client: DfsClient, stop: () => boolean, acked: Map<string, string>) {
  for (let i = 0; !stop() && i < 10_000; i++) {
    const data = randomBytes(1000 + (i % 7) * 3000);
    try {
      await client.write(`/stream/${i}`, [data]);
      acked.set(`/stream/${i}`, sha(data));
    } catch {
      // The directory is down for a moment; only acknowledged writes must survive.
    }
  }
}

async function crashDirectoryDuringWrites(t: test.TestContext, c: Cluster, afterCrash?: () => void) {
  const work = tmpDir(t);
  const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(work, "cache"), log: logger("test") });
  t.after(() => client.close());
  const acked = new Map<string, string>();
  let stop = false;
  const writer = writeStream(client, () => stop, acked);
  await waitFor(() => acked.size >= 30, "some writes acknowledged");
  await c.directory.kill("SIGKILL");
  const ackedAtCrash = acked.size;
  stop = true;
  afterCrash?.();
  await c.startDirectory(Number(new URL(c.dirUrl).port));
  await writer;
  await c.waitUp(3);
  return { client, acked, ackedAtCrash };
}

async function checkAll(client: DfsClient, acked: Map<string, string>) {
  for (const [p, hash] of acked) {
    const info = await client.stat(p);
    assert.equal(info.sha256, hash, `${p} has the acknowledged content`);
  }
  // Read a few back in full: none is torn.
  for (const p of [...acked.keys()].slice(-5)) {
    const parts: Buffer[] = [];
    await client.read(p, async (d) => void parts.push(d));
    assert.equal(sha(Buffer.concat(parts)), acked.get(p));
  }
}

test("kill -9 of the directory during a stream of writes loses no acknowledged write", async (t) => {
  const c = await startCluster(t, { storage: 3 });
  const { client, acked, ackedAtCrash } = await crashDirectoryDuringWrites(t, c);
  assert.ok(ackedAtCrash >= 30);
  await checkAll(client, acked);
});

test("a torn journal tail is cut at the last good record and start-up goes on", async (t) => {
  const c = await startCluster(t, { storage: 3 });
  const meta = path.join(c.root, "directory", "meta");
  const { client, acked } = await crashDirectoryDuringWrites(t, c, () => {
    const journals = fs.readdirSync(meta).filter((f) => /^journal\.\d+$/.test(f)).sort();
    const last = path.join(meta, journals[journals.length - 1]!);
    // Half a record header and some garbage, as a crash in the middle of a write would leave.
    fs.appendFileSync(last, Buffer.from([0x40, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe]));
  });
  await checkAll(client, acked);
  assert.match(c.directory.stderr, /cut|torn/i, "the cut is logged");
});
