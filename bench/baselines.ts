/**
 * Machine baselines, measured in the same run as the dfs figures: local disk, SHA-256, one wss+mTLS
 * connection of our own transport (1 MiB frames, round trip, request rate), and the bare runtime.
 */
import { createHash, randomFillSync } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import { connect } from "../src/transport/connect.js";
import { dfsBinary, startWorker, timeBinary, type Child } from "./cluster.js";

const MiB = 1024 * 1024;

export interface Baselines {
  disk: { bytes: number; writeFsyncMiBs: number; readMiBs: number; fsyncPerSec: number; note: string };
  sha256MiBs: number;
  wss: { bytes: number; frameBytes: number; inflight: number; MiBs: number; rttP50Us: number; rttP99Us: number; requestsPerSec: number; note: string };
  runtime: { startMs: number; rssBytes: number; label: string; note: string };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const mibs = (bytes: number, ms: number) => bytes / MiB / (ms / 1000);

/** Sequential write of `bytes` in 4 MiB blocks + one fsync, then a read back (page cache not dropped). */
export async function measureDisk(dir: string, bytes: number): Promise<Baselines["disk"]> {
  const file = path.join(dir, "disk-baseline.bin");
  const block = randomFillSync(Buffer.allocUnsafe(4 * MiB));
  let t0 = performance.now();
  const fh = await fs.open(file, "w");
  for (let done = 0; done < bytes; done += block.length) await fh.write(block, 0, Math.min(block.length, bytes - done));
  await fh.sync();
  await fh.close();
  const writeMs = performance.now() - t0;

  t0 = performance.now();
  const rh = await fs.open(file, "r");
  const buf = Buffer.allocUnsafe(4 * MiB);
  let read = 0;
  for (;;) {
    const { bytesRead } = await rh.read(buf, 0, buf.length, null);
    if (bytesRead === 0) break;
    read += bytesRead;
  }
  await rh.close();
  const readMs = performance.now() - t0;
  await fs.rm(file, { force: true });

  // Small durable writes: what every small-file commit and chunk store has to pay at least once.
  const small = path.join(dir, "fsync-baseline.bin");
  const sh = await fs.open(small, "w");
  const one = Buffer.alloc(1024, 1);
  let n = 0;
  t0 = performance.now();
  while (performance.now() - t0 < 1000) {
    await sh.write(one, 0, one.length, 0);
    await sh.sync();
    n++;
  }
  const fsyncPerSec = n / ((performance.now() - t0) / 1000);
  await sh.close();
  await fs.rm(small, { force: true });
  return {
    bytes,
    writeFsyncMiBs: mibs(bytes, writeMs),
    readMiBs: mibs(read, readMs),
    fsyncPerSec,
    note: "read right after the write, from the page cache (nothing dropped); fsync/s = 1 KiB overwrite + fsync in a loop",
  };
}

/** SHA-256 of `bytes` in 4 MiB pieces (one hash per piece, as a chunk is hashed). */
export function measureSha(bytes: number): number {
  const block = randomFillSync(Buffer.allocUnsafe(4 * MiB));
  createHash("sha256").update(block).digest(); // warm-up
  const t0 = performance.now();
  for (let done = 0; done < bytes; done += block.length) createHash("sha256").update(block).digest();
  return mibs(bytes, performance.now() - t0);
}

/**
 * One wss+mTLS connection of our transport from this process to a sink in a worker process:
 * 1 MiB frames as requests (the sink answers null) with `inflight` outstanding; then sequential
 * empty requests for the round trip; then empty requests 16 at a time for the request rate.
 */
export async function measureWss(certs: string, logDir: string, bytes: number): Promise<{ wss: Baselines["wss"]; sink: Child }> {
  const sink = startWorker("wss-sink", "sink", { certs }, logDir);
  const url = (await sink.next(/listening on (wss:\/\/\S+)/))[1]!;
  const ch = await connect(url, { tls: loadCerts(certs, "client"), log: logger("bench") });
  try {
    const frame = randomFillSync(Buffer.allocUnsafe(MiB));
    const inflight = 8;
    const pump = async (total: number) => {
      let sent = 0;
      const lanes = Array.from({ length: inflight }, async () => {
        while (sent < total) {
          sent += frame.length;
          await ch.request("t.sink", { data: frame }, { timeoutMs: 60_000 });
        }
      });
      await Promise.all(lanes);
      return sent;
    };
    await pump(32 * MiB); // warm-up: TLS session, JIT, socket buffers
    let t0 = performance.now();
    const sent = await pump(bytes);
    const MiBs = mibs(sent, performance.now() - t0);

    const rtt: number[] = [];
    for (let i = 0; i < 2200; i++) {
      t0 = performance.now();
      await ch.request("t.sink", {});
      if (i >= 200) rtt.push((performance.now() - t0) * 1000);
    }
    rtt.sort((a, b) => a - b);

    let done = 0;
    t0 = performance.now();
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (performance.now() - t0 < 1000) {
        await ch.request("t.sink", {});
        done++;
      }
    }));
    const requestsPerSec = done / ((performance.now() - t0) / 1000);
    return {
      wss: {
        bytes: sent, frameBytes: frame.length, inflight, MiBs, rttP50Us: percentile(rtt, 50), rttP99Us: percentile(rtt, 99), requestsPerSec,
        note: "bench process -> sink worker process over 127.0.0.1, TLS 1.3 mutual, msgpack envelopes, request/reply(null)",
      },
      sink,
    };
  } finally {
    ch.close();
  }
}

/** The bare runtime: a worker process (node + tsx + the dfs modules) that starts and does nothing. */
export async function measureRuntime(logDir: string): Promise<Baselines["runtime"]> {
  const bin = dfsBinary();
  if (bin) {
    const r = await timeBinary(bin, "idle", ["--version"], logDir);
    return { startMs: r.ms, rssBytes: r.peakRss, label: "bare dfs executable", note: "dfs --version: the executable loads every module, prints its version and exits" };
  }
  const idle = startWorker("idle", "idle", {}, logDir);
  const msg = await idle.message<{ vm: { hwm: number } }>(60_000);
  const startMs = performance.now() - idle.started;
  await idle.exited;
  return { startMs, rssBytes: msg.vm.hwm, label: "bare node+tsx process", note: "node --import tsx bench/worker.ts idle: loads the client, transport and certificate modules, then exits" };
}
