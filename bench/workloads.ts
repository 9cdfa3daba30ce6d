/** The file workloads against the running cluster: one large file, then many small files. */
import { execFileSync } from "node:child_process";
import { randomFillSync } from "node:crypto";
import { writeFileSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { percentile } from "./baselines.js";
import { cpuByGroup, cpuSince, dfsBinary, startWorker, timeBinary, type BenchCluster, type Child } from "./cluster.js";

const MiB = 1024 * 1024;

interface WorkerResult {
  ms: number;
  bytes: number;
  vm: { hwm: number; rss: number };
  stats: Record<string, number>;
}

export interface TransferFigure {
  MiBs: number;
  ms: number;
  bytes: number;
  clientPeakRss: number;
  stats: Record<string, number>;
  /** CPU time per MiB moved, by kind of process (the client's own when it ran from the executable). */
  cpuMsPerMiB?: Record<string, number>;
}

export interface LargeResult {
  size: number;
  write: TransferFigure;
  coldRead: TransferFigure;
  warmRead: TransferFigure;
  note: string;
}

/** Empties the kernel's page cache, as a cold read of another file system is measured; false where not allowed. */
export function dropPageCache(): boolean {
  try {
    execFileSync("sync");
    writeFileSync("/proc/sys/vm/drop_caches", "3");
    return true;
  } catch {
    return false;
  }
}

/** Writes `size` bytes of random data to a local file, 16 MiB at a time. */
export async function makeFile(file: string, size: number): Promise<void> {
  const fh = await fs.open(file, "w");
  const buf = Buffer.allocUnsafe(16 * MiB);
  for (let done = 0; done < size; done += buf.length) {
    randomFillSync(buf);
    await fh.write(buf, 0, Math.min(buf.length, size - done));
  }
  await fh.close();
}

async function runOnce(name: string, mode: string, config: unknown, logDir: string): Promise<TransferFigure> {
  const w = startWorker(name, mode, config, logDir);
  const r = await w.message<WorkerResult>(3_600_000);
  await w.exited;
  return { MiBs: r.bytes / MiB / (r.ms / 1000), ms: r.ms, bytes: r.bytes, clientPeakRss: r.vm.hwm, stats: r.stats };
}

/**
 * Large file: write from a local file, cold read (empty cache), warm read (same cache), each its own client
 * process: one-shot commands of the built executable when there is one (what users run; timed from the outside,
 * less the time the same executable takes for a one-request command, so start-up and connecting do not count),
 * else bench workers run from source (timed inside from the call to its return).
 */
export async function largeFile(cluster: BenchCluster, size: number, progress: (s: string) => void): Promise<LargeResult> {
  const file = path.join(cluster.root, "large.bin");
  progress(`large file: making ${(size / MiB).toFixed(0)} MiB of random data`);
  await makeFile(file, size);
  const cache = path.join(cluster.root, "cache-large");
  const bin = dfsBinary();
  const common = { dirUrls: cluster.dirUrls, certs: cluster.certs, cacheDir: cache, cacheBytes: size + 256 * MiB, remote: "/large.bin" };
  const viaBinary = async (name: string, cacheDir: string, command: string[]): Promise<TransferFigure> => {
    const args = ["--role", "client", "--directory", cluster.dirUrls.join(","), "--certs", cluster.certs, "--cache", cacheDir, "--cache-size", String(common.cacheBytes)];
    const start = await timeBinary(bin!, `${name}-start`, [...args, "ls", "/"], cluster.logs);
    const run = await timeBinary(bin!, name, [...args, ...command], cluster.logs);
    const ms = Math.max(1, run.ms - start.ms);
    const cpuMsPerMiB = { client: Math.max(0, run.cpuMs - start.cpuMs) / (size / MiB) };
    return { MiBs: size / MiB / (ms / 1000), ms, bytes: size, clientPeakRss: run.peakRss, stats: {}, cpuMsPerMiB };
  };
  const groups = { directory: cluster.directories, storage: cluster.storage };
  const run = async (name: string, mode: string, config: typeof common & { file?: string }, command: string[]) => {
    const cpu0 = cpuByGroup(groups);
    const f = bin ? await viaBinary(name, config.cacheDir, command) : await runOnce(name, mode, config, cluster.logs);
    f.cpuMsPerMiB = { ...cpuSince(groups, cpu0, size / MiB), ...f.cpuMsPerMiB };
    return f;
  };
  progress("large file: write");
  const write = await run("large-write", "large-write", { ...common, cacheDir: path.join(cluster.root, "cache-writer"), file }, ["write", common.remote, file]);
  await fs.rm(file, { force: true });
  const cpuText = (f: TransferFigure) => Object.entries(f.cpuMsPerMiB ?? {}).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
  const dropped = dropPageCache();
  progress(`large file: write ${write.MiBs.toFixed(1)} MiB/s (CPU ms/MiB: ${cpuText(write)}); cold read${dropped ? " (page cache dropped)" : ""}`);
  const coldRead = await run("large-cold-read", "large-read", common, ["read", common.remote, "-"]);
  progress(`large file: cold read ${coldRead.MiBs.toFixed(1)} MiB/s (CPU ms/MiB: ${cpuText(coldRead)}); warm read`);
  const warmRead = await run("large-warm-read", "large-read", common, ["read", common.remote, "-"]);
  progress(`large file: warm read ${warmRead.MiBs.toFixed(1)} MiB/s (CPU ms/MiB: ${cpuText(warmRead)})`);
  await fs.rm(cache, { recursive: true, force: true });
  return {
    size, write, coldRead, warmRead,
    note: (bin
      ? `run as \`dfs --role client write|read\` from ${bin}, timed from spawn to exit less the time of \`dfs --role client ls /\` (start-up, connect, one request); reads go to stdout, which is /dev/null; peak RSS = VmHWM sampled every 10 ms; `
      : "timed inside each client process from the call to its return (connect excluded); reads drop the data (not written to a local file); ") +
      (dropped
        ? "the page cache was dropped before the cold read (sync; echo 3 > /proc/sys/vm/drop_caches), so the storage nodes read their chunks from the disk"
        : "the cold read finds the chunks in the storage nodes' page cache (dropping it needs root)") +
      ", the warm read finds them in the client cache (in the page cache)",
  };
}

export interface OpFigure {
  ops: number;
  errors: number;
  firstError?: string;
  seconds: number;
  opsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  /**
   * CPU time each kind of process spent per operation during the phase (ms; storage and workers summed over
   * their processes): with every process on the same cores, cores x 1000 / their total bounds the rate.
   */
  cpuMsPerOp: Record<string, number>;
}

export interface SmallResult {
  clients: number;
  processes: number;
  sets: { name: string; count: number; size: number }[];
  phases: Record<string, OpFigure>;
  workerPeakRss: number[];
  note: string;
}

export interface SmallOptions {
  count1k: number;
  count64k: number;
  clients: number;
  processes: number;
  lsPerClient: number;
  /** The phases to run, in order (default all; a read, stat, ls or lock phase needs the write phase of its set before it). */
  phases?: readonly string[];
}

const SMALL_PHASES = ["write:1k", "read:1k", "write:64k", "read:64k", "stat:1k", "ls:1k", "lock:1k"] as const;

/** Small files: `clients` DfsClient instances spread over `processes` worker processes, all working at once per phase. */
export async function smallFiles(cluster: BenchCluster, o: SmallOptions, progress: (s: string) => void): Promise<SmallResult> {
  const sets = [
    { name: "1k", count: o.count1k, size: 1024 },
    { name: "64k", count: o.count64k, size: 64 * 1024 },
  ];
  const per = Math.ceil(o.clients / o.processes);
  const workers: Child[] = [];
  for (let p = 0, first = 0; p < o.processes && first < o.clients; p++, first += per) {
    workers.push(startWorker(`small-${p}`, "small", {
      dirUrls: cluster.dirUrls, certs: cluster.certs, cacheDir: path.join(cluster.data, "cache-small"),
      clients: Math.min(per, o.clients - first), first, total: o.clients, sets, lsPerClient: o.lsPerClient,
    }, cluster.logs));
  }
  try {
    await Promise.all(workers.map((w) => w.message(120_000)));
    const phases: Record<string, OpFigure> = {};
    const groups: Record<string, Child[]> = {
      directory: cluster.directories, lock: [cluster.lock], storage: cluster.storage, clients: workers,
    };
    for (const phase of o.phases ?? SMALL_PHASES) {
      const cpu0 = cpuByGroup(groups);
      const t0 = performance.now();
      for (const w of workers) w.send(`go ${phase}`);
      const results = await Promise.all(workers.map((w) => w.message<{ lat: number[]; errors: number; firstError?: string }>(3_600_000)));
      const seconds = (performance.now() - t0) / 1000;
      const lat = results.flatMap((r) => r.lat).sort((a, b) => a - b);
      const errors = results.reduce((n, r) => n + r.errors, 0);
      const cpuMsPerOp = cpuSince(groups, cpu0, Math.max(1, lat.length));
      phases[phase] = {
        cpuMsPerOp,
        ops: lat.length, errors, firstError: results.find((r) => r.firstError)?.firstError, seconds,
        opsPerSec: lat.length / seconds, p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99),
      };
      const f = phases[phase]!;
      const cpuText = Object.entries(cpuMsPerOp).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
      progress(`small files: ${phase} ${f.ops} ops, ${f.opsPerSec.toFixed(0)}/s, p50 ${f.p50Ms.toFixed(2)} ms, p99 ${f.p99Ms.toFixed(2)} ms${errors ? `, ${errors} errors (${f.firstError})` : ""}; CPU ms/op: ${cpuText}`);
    }
    for (const w of workers) w.send("exit");
    const done = await Promise.all(workers.map((w) => w.message<{ vm: { hwm: number } }>(60_000)));
    await Promise.all(workers.map((w) => w.exited));
    return {
      clients: o.clients, processes: workers.length, sets, phases, workerPeakRss: done.map((d) => d.vm.hwm),
      note: `${o.clients} DfsClient instances in ${workers.length} worker processes, each client one op at a time; ops/s = all ops / wall time ` +
        "from 'go' to the last worker's answer; a write = DfsClient.write of a new file (place, put along a chain of 2, commit if still absent: no lock); " +
        "a read = lookup + get from a neighbour client's files (cold cache); stat = dir.lookup; ls = dir.list of the client's own folder; " +
        "lock = lock.acquire + lock.release of each 1 KiB path (the part of a write spent on the lock service)",
    };
  } finally {
    for (const w of workers) if (w.alive) void w.kill();
  }
}
