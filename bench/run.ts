/**
 * `npm run bench [-- --quick] [--size BYTES] [--json FILE] ...`: starts a real multi-process dfs
 * cluster on loopback in a fresh temp folder, measures machine baselines and dfs figures, prints
 * markdown tables to stdout (progress to stderr) and, with --json, writes every figure to FILE.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { measureDisk, measureRuntime, measureSha, measureWss, type Baselines } from "./baselines.js";
import { BenchCluster, childNodeFlags, dfsBinary, killAll, readVm } from "./cluster.js";
import { metadataScale } from "./metadata.js";
import { postgresRuns, type PgResults } from "./pg-runs.js";
import { BenchPostgres } from "./postgres.js";
import { baselineTable, buildRows, rowsTable, type Results } from "./report.js";
import { pgMetaTable, pgSmallTable } from "./report-pg.js";
import { s3Section } from "./s3.js";
import { largeFile, smallFiles } from "./workloads.js";

const MiB = 1024 * 1024;
const USAGE = `usage: npm run bench -- [options]
  --quick              small sizes, under two minutes (large file 128 MiB, 1,000 + 200 small files, 100,000 metadata files)
  --size BYTES         large-file size (suffix K, M, G allowed; default 1G, quick 128M)
  --json FILE          also write every figure as JSON to FILE
  --only LIST          comma list of large, small, meta, s3 (default: all; baselines always run)
  --files-1k N         1 KiB files (default 5000, quick 1000)
  --files-64k N        64 KiB files (default 1000, quick 200)
  --meta-files N       files in the metadata-scale directory (default 1000000, quick 100000)
  --clients N          concurrent small-file clients (default 16)
  --procs N            worker processes the clients are spread over (default 2)
  --metadata postgres  also run on PostgreSQL (a server the bench starts): small files over one and over two
                       directory processes, beside the sql.js figures, and metadata scale (default sqlite alone)
  --pg-meta-files N    files in the metadata-scale run on PostgreSQL (default 10000000, quick 200000)
  --cpu-prof DIR       run every dfs node and worker with --cpu-prof, profiles into DIR
  --keep               keep the temp folder (data, logs) instead of removing it
  --help
environment: DFS_BIN=FILE runs the dfs nodes and the large-file clients from that built executable; without it
  dist/dfs is used when it is newer than every source file (npm run build:bin), else node + tsx. The small-file
  clients (many in one worker process) always run from source.`;

function bytesArg(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(text.trim());
  if (!m) throw new Error(`${what} must be a byte count like 134217728, 128M or 1G`);
  const mult = { "": 1, k: 1024, m: MiB, g: 1024 * MiB, t: 1024 * 1024 * MiB }[m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"];
  return Math.round(Number(m[1]) * mult);
}

function intArg(text: string | undefined, fallback: number, what: string): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${what} must be a whole number >= 1`);
  return n;
}

const { values: o } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    size: { type: "string" },
    json: { type: "string" },
    only: { type: "string" },
    "files-1k": { type: "string" },
    "files-64k": { type: "string" },
    "meta-files": { type: "string" },
    clients: { type: "string" },
    procs: { type: "string" },
    metadata: { type: "string", default: "sqlite" },
    "pg-meta-files": { type: "string" },
    "cpu-prof": { type: "string" },
    keep: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (o.help) {
  process.stdout.write(USAGE + "\n");
  process.exit(0);
}

const quick = o.quick!;
const opts = {
  quick,
  size: o.size ? bytesArg(o.size, "--size") : quick ? 128 * MiB : 1024 * MiB,
  diskBytes: quick ? 64 * MiB : 256 * MiB,
  wssBytes: quick ? 256 * MiB : 1024 * MiB,
  shaBytes: quick ? 256 * MiB : 1024 * MiB,
  count1k: intArg(o["files-1k"], quick ? 1000 : 5000, "--files-1k"),
  count64k: intArg(o["files-64k"], quick ? 200 : 1000, "--files-64k"),
  metaFiles: intArg(o["meta-files"], quick ? 100_000 : 1_000_000, "--meta-files"),
  clients: intArg(o.clients, 16, "--clients"),
  procs: intArg(o.procs, 2, "--procs"),
  only: new Set((o.only ?? "large,small,meta,s3").split(",").map((s) => s.trim())),
  postgres: o.metadata === "postgres",
  pgMetaFiles: intArg(o["pg-meta-files"], quick ? 200_000 : 10_000_000, "--pg-meta-files"),
};
if (!["sqlite", "postgres"].includes(o.metadata!)) throw new Error(`--metadata takes sqlite or postgres (got ${o.metadata})`);
for (const p of opts.only) if (!["large", "small", "meta", "s3"].includes(p)) throw new Error(`--only takes large, small, meta, s3 (got ${p})`);
if (o["cpu-prof"]) {
  const dir = path.resolve(o["cpu-prof"]);
  fs.mkdirSync(dir, { recursive: true });
  childNodeFlags.push("--cpu-prof", "--cpu-prof-dir", dir);
}

const started = performance.now();
const progress = (s: string) => process.stderr.write(`[bench +${((performance.now() - started) / 1000).toFixed(1)}s] ${s}\n`);

const root = fs.mkdtempSync(path.join(os.tmpdir(), "dfs-bench-"));
let pg: BenchPostgres | undefined;
let cleaned = false;
function cleanup(): void {
  if (cleaned) return;
  cleaned = true;
  killAll();
  pg?.killNow(o.keep!);
  if (o.keep) process.stderr.write(`[bench] kept ${root}\n`);
  else fs.rmSync(root, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}
process.on("exit", cleanup);
for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
  process.on(sig, () => {
    process.stderr.write(`\n[bench] ${sig}: stopping every child process and removing ${root}\n`);
    process.exit(code);
  });
}

async function main(): Promise<void> {
  progress(`temp folder ${root}; ${quick ? "quick" : "full"} run, large file ${(opts.size / MiB).toFixed(0)} MiB, ${os.cpus().length} CPUs; nodes run ${dfsBinary() ?? "from source (node + tsx): no dist/dfs newer than the sources"}`);
  const load0 = os.loadavg()[0]!;
  if (load0 > 1) progress(`warning: load average ${load0.toFixed(1)} before the start: other work on this machine will skew the figures`);
  const cluster = new BenchCluster(root, { storage: 3, replicas: 2 });
  await cluster.makeCerts();

  progress(`baseline: local disk (${opts.diskBytes / MiB} MiB write+fsync, read back; 1 s of 1 KiB fsyncs)`);
  const disk = await measureDisk(root, opts.diskBytes);
  progress(`baseline: disk write+fsync ${disk.writeFsyncMiBs.toFixed(0)} MiB/s, read ${disk.readMiBs.toFixed(0)} MiB/s, ${disk.fsyncPerSec.toFixed(0)} fsync/s; SHA-256`);
  const sha256MiBs = measureSha(opts.shaBytes);
  progress(`baseline: SHA-256 ${sha256MiBs.toFixed(0)} MiB/s; wss+mTLS connection (${opts.wssBytes / MiB} MiB of 1 MiB frames)`);
  const { wss, sink } = await measureWss(cluster.certs, cluster.logs, opts.wssBytes);
  await sink.stop();
  progress(`baseline: wss+mTLS ${wss.MiBs.toFixed(0)} MiB/s, RTT p50 ${wss.rttP50Us.toFixed(0)} µs, ${wss.requestsPerSec.toFixed(0)} req/s; bare runtime`);
  const runtime = await measureRuntime(cluster.logs);
  const baselines: Baselines = { disk, sha256MiBs, wss, runtime };
  const results: Results = { baselines, cores: os.cpus().length };

  let others: Record<string, ReturnType<typeof readVm>> = {};
  const small = { count1k: opts.count1k, count64k: opts.count64k, clients: opts.clients, processes: opts.procs, lsPerClient: quick ? 50 : 200 };
  if (opts.only.has("large") || opts.only.has("small") || opts.only.has("s3")) {
    progress("starting cluster: directory, lock, 3 storage nodes (replicas 2)");
    await cluster.start();
    progress(`cluster up at ${cluster.dirUrls.join(",")}`);
    if (opts.only.has("large")) results.large = await largeFile(cluster, opts.size, progress);
    if (opts.only.has("small")) {
      progress(`small files: ${opts.count1k} × 1 KiB and ${opts.count64k} × 64 KiB, ${opts.clients} clients in ${opts.procs} processes`);
      results.small = await smallFiles(cluster, small, progress);
    }
    if (opts.only.has("s3")) {
      progress(`s3 gateway: a ${(opts.size / MiB).toFixed(0)} MiB object, then ${opts.count1k} × 1 KiB objects from ${opts.clients} clients`);
      results.s3 = await s3Section(cluster, { size: opts.size, count: opts.count1k, clients: opts.clients }, progress);
    }
    results.storagePeakRss = cluster.storage.map((c, i) => ({ name: `storage-${i}`, bytes: readVm(c.pid).hwm }));
    others = { directory: readVm(cluster.directory.pid), lock: readVm(cluster.lock.pid) };
    progress("stopping the cluster");
    await cluster.stop();
  }

  if (opts.only.has("meta")) results.metadata = await metadataScale(root, cluster.certs, cluster.logs, opts.metaFiles, progress);

  let pgResults: PgResults | undefined;
  if (opts.postgres && (opts.only.has("small") || opts.only.has("meta"))) {
    progress("PostgreSQL: starting the bench's server");
    pg = await BenchPostgres.start();
    progress(`PostgreSQL ${pg.version} on port ${pg.server.port}, data in ${pg.folder}`);
    pgResults = await postgresRuns(pg, {
      root, certs: cluster.certs, logs: cluster.logs, progress,
      small: opts.only.has("small") ? small : undefined,
      metaFiles: opts.only.has("meta") ? opts.pgMetaFiles : undefined,
    });
    await pg.close(cluster.logs, o.keep!);
    pg = undefined;
  }

  const rows = buildRows(results);
  const elapsed = (performance.now() - started) / 1000;
  const title = `## dfs bench (${quick ? "quick" : "full"}) — ${new Date().toISOString()}, ${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}, node ${process.version}, ${elapsed.toFixed(0)} s`;
  const notes = [
    results.large?.note && `large file: ${results.large.note}`,
    results.large && `warm read: the client hashes every byte once (each chunk against its name as it leaves the cache), so the SHA-256 rate of one core bounds it`,
    results.small?.note && `small files: ${results.small.note}`,
    results.s3 && `s3: the gateway runs as its own process over plain HTTP on loopback (--s3-insecure-loopback); the AWS SDK for JavaScript v3 in the bench process sends one PutObject of the whole file (streamed, aws-chunked with a CRC32 trailer as the SDK sends it) and one GetObject, then ${results.s3.small.clients} concurrent loops of 1 KiB PutObject and GetObject; the page cache is dropped before the GetObject when the bench runs as root`,
    results.metadata && `metadata: ${results.metadata.diskNote}; restart = SIGKILL, start on the same data, time to the first dir.lookup answer (listening line after ${(results.metadata.restartListeningMs / 1000).toFixed(2)} s; an empty directory starts in ${(results.metadata.emptyStartMs / 1000).toFixed(2)} s)`,
    `ratio = dfs figure / the baseline named in its row; for latencies that is "round trips' worth"`,
    `every process (bench, workers, ${opts.only.has("large") || opts.only.has("small") ? "5 dfs nodes, " : ""}the metadata directory) shares the ${os.cpus().length} CPUs of this machine`,
    `dfs nodes ran ${dfsBinary() ? `from ${dfsBinary()}, and so did the large-file clients` : "from source (node --import tsx src/node.ts)"}; small-file client workers run from source`,
    others.directory && `cluster directory peak RSS ${(others.directory.hwm / MiB).toFixed(1)} MiB, lock service ${(others.lock!.hwm / MiB).toFixed(1)} MiB`,
    pgResults && `PostgreSQL ${pgResults.server.version}, started by the bench in a temp folder on the same disk: ${pgResults.server.settings.join(" ")}`,
    pgResults?.small && `small files on PostgreSQL: the 1 KiB phases alone, each on a fresh cluster over a fresh database; with 2 directories every node and client is given both addresses and each client starts at a random one`,
    pgResults?.metadata && `metadata on PostgreSQL: ${pgResults.metadata.note}`,
    `load average (1 min) ${load0.toFixed(2)} at the start, ${os.loadavg()[0]!.toFixed(2)} at the end (${os.cpus().length} CPUs)`,
  ].filter(Boolean) as string[];
  const pgTables = [
    ...(pgResults?.small ? ["", pgSmallTable(pgResults.small, results.small)] : []),
    ...(pgResults?.metadata ? ["", pgMetaTable(pgResults.metadata)] : []),
  ];
  process.stdout.write([title, "", baselineTable(baselines), "", rowsTable(rows), ...pgTables, "", ...notes.map((n) => `- ${n}`), ""].join("\n"));
  if (o.json) {
    const json = {
      version: 1, startedAt: new Date(Date.now() - elapsed * 1000).toISOString(), elapsedSeconds: elapsed,
      options: { ...opts, only: [...opts.only] },
      machine: {
        cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryBytes: os.totalmem(), node: process.version,
        platform: `${os.platform()} ${os.release()}`, loadAvgStart: load0, loadAvgEnd: os.loadavg()[0],
      },
      ...results, clusterRss: others, ...(pgResults ? { postgres: pgResults } : {}), rows, notes,
    };
    fs.writeFileSync(o.json, JSON.stringify(json, null, 2) + "\n");
    progress(`figures written to ${o.json}`);
  }
  progress(`done in ${elapsed.toFixed(1)} s`);
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err) => {
    process.stderr.write(`[bench] failed: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
