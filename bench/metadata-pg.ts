/**
 * Metadata scale on PostgreSQL: one directory process over a fresh database of the bench's server
 * takes N zero-chunk files through dir.commit from several channels at once. At checkpoints (100,000,
 * then each tenfold, then N) the load pauses for the directory's RSS, dir.lookup latency and the
 * database's size, so that each can be read against the number of files.
 */
import path from "node:path";
import type { Channel } from "../src/transport/channel.js";
import { percentile } from "./baselines.js";
import { directoryChannel, readVm, startDfs, type Child } from "./cluster.js";
import { BATCH, EMPTY_SHA, metaPath, timedLookups } from "./metadata.js";
import type { BenchPostgres } from "./postgres.js";

/** Channels committing at once. */
const LANES = 4;
const LOOKUPS = 2000;
const FIRST_CHECKPOINT = 100_000;

export interface PgCheckpoint {
  files: number;
  /** The directory's resident set at this point (VmRSS), and its peak so far (VmHWM). */
  rssBytes: number;
  peakRssBytes: number;
  databaseBytes: number;
  lookupP50Ms: number;
  lookupP99Ms: number;
  /** Files committed since the previous checkpoint, per second of loading. */
  commitFilesPerSec: number;
}

export interface PgMetaResult {
  files: number;
  batch: number;
  lanes: number;
  lookupsPerCheckpoint: number;
  commitSeconds: number;
  commitFilesPerSec: number;
  checkpoints: PgCheckpoint[];
  /** Last checkpoint / first: RSS and dir.lookup p50. */
  rssGrowth: number;
  lookupP50Ratio: number;
  /** How the figures were taken. */
  note: string;
}

/** Where the checkpoints fall: 100,000 and each tenfold below N, then N (N alone when it is smaller). */
function checkpointsFor(files: number): number[] {
  const out: number[] = [];
  for (let c = FIRST_CHECKPOINT; c < files; c *= 10) out.push(c);
  out.push(files);
  return out;
}

/** Eight digits: room for 10,000,000 files and more. */
const filePath = (i: number) => metaPath(i, 8);

/**
 * Lane k owns files [k·N/LANES, (k+1)·N/LANES) and commits them in order: the lanes add to far-apart
 * parts of the path index, so their serializable transactions rarely touch the same index pages.
 */
class Lanes {
  readonly start: number[];
  readonly end: number[];
  readonly done: number[];

  constructor(readonly files: number) {
    this.start = Array.from({ length: LANES }, (_, k) => Math.floor((k * files) / LANES));
    this.end = Array.from({ length: LANES }, (_, k) => Math.floor(((k + 1) * files) / LANES));
    this.done = Array(LANES).fill(0);
  }

  get committed(): number {
    return this.done.reduce((a, b) => a + b, 0);
  }

  /** A file committed so far, at random. */
  randomCommitted(): number {
    for (;;) {
      const k = Math.floor(Math.random() * LANES);
      if (this.done[k]! > 0) return this.start[k]! + Math.floor(Math.random() * this.done[k]!);
    }
  }

  /** Commits from every lane until `total` files are in (each lane its share). */
  async fill(channels: Channel[], total: number, onBatch: () => void): Promise<void> {
    await Promise.all(channels.map(async (ch, k) => {
      const target = Math.min(this.end[k]! - this.start[k]!, Math.ceil(total / LANES));
      while (this.done[k]! < target) {
        const from = this.start[k]! + this.done[k]!;
        const to = Math.min(this.start[k]! + target, from + BATCH);
        const files = [];
        for (let i = from; i < to; i++) files.push({ path: filePath(i), size: 0, sha256: EMPTY_SHA, chunks: [] });
        await ch.request("dir.commit", { files }, { timeoutMs: 600_000 });
        this.done[k] = to - this.start[k]!;
        onBatch();
      }
    }));
  }
}

export async function pgMetadataScale(
  pg: BenchPostgres, certs: string, logDir: string, root: string, files: number, progress: (s: string) => void,
): Promise<PgMetaResult> {
  const url = await pg.database("meta");
  const args = ["--role", "directory", "--port", "0", "--host", "127.0.0.1", "--certs", certs, "--data", path.join(root, "pg-meta-directory"), "--metadata", url];
  let dir: { child: Child; url: string } | undefined;
  const channels: Channel[] = [];
  try {
    dir = await startDfs("pg-meta-directory", args, logDir);
    for (let k = 0; k < LANES; k++) channels.push(await directoryChannel(dir.url, certs));
    const lanes = new Lanes(files);
    const checkpoints: PgCheckpoint[] = [];
    progress(`metadata on PostgreSQL: committing ${files} zero-chunk files in batches of ${BATCH} from ${LANES} channels; checkpoints at ${checkpointsFor(files).join(", ")}`);
    let loadMs = 0;
    let lastReport = performance.now();
    for (const target of checkpointsFor(files)) {
      const before = lanes.committed;
      const t0 = performance.now();
      await lanes.fill(channels, target, () => {
        if (performance.now() - lastReport < 10_000) return;
        lastReport = performance.now();
        const n = lanes.committed;
        progress(`metadata on PostgreSQL: ${n} files committed (${(((n - before) / (lastReport - t0)) * 1000).toFixed(0)} files/s since ${before})`);
      });
      const ms = performance.now() - t0;
      loadMs += ms;
      const lat = await timedLookups(channels[0]!, () => lanes.randomCommitted(), filePath, LOOKUPS);
      const vm = readVm(dir.child.pid);
      const cp: PgCheckpoint = {
        files: lanes.committed, rssBytes: vm.rss, peakRssBytes: vm.hwm, databaseBytes: await pg.databaseBytes(url),
        lookupP50Ms: percentile(lat, 50), lookupP99Ms: percentile(lat, 99), commitFilesPerSec: ((lanes.committed - before) / ms) * 1000,
      };
      checkpoints.push(cp);
      progress(
        `metadata on PostgreSQL: at ${cp.files} files: directory RSS ${(cp.rssBytes / 2 ** 20).toFixed(1)} MiB, database ${(cp.databaseBytes / 2 ** 20).toFixed(0)} MiB, ` +
          `dir.lookup p50 ${cp.lookupP50Ms.toFixed(2)} ms p99 ${cp.lookupP99Ms.toFixed(2)} ms, ${cp.commitFilesPerSec.toFixed(0)} files/s`,
      );
    }
    const first = checkpoints[0]!;
    const last = checkpoints.at(-1)!;
    return {
      files, batch: BATCH, lanes: LANES, lookupsPerCheckpoint: LOOKUPS,
      commitSeconds: loadMs / 1000, commitFilesPerSec: (files / loadMs) * 1000, checkpoints,
      rssGrowth: last.rssBytes / first.rssBytes, lookupP50Ratio: last.lookupP50Ms / first.lookupP50Ms,
      note:
        `one directory process over a database of its own; ${LANES} channels commit ${BATCH}-file batches of zero-chunk files, each channel its own range of paths; ` +
        `at each checkpoint the load pauses: directory RSS (VmRSS), pg_database_size, ${LOOKUPS} random dir.lookup one at a time (after 100 warm-up); ` +
        "commit rate = files / seconds of loading (the pauses left out)",
    };
  } finally {
    for (const ch of channels) ch.close();
    await dir?.child.stop();
  }
}
