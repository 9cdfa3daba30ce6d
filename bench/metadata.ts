/**
 * Metadata scale, on a directory process of its own (own data folder, no storage nodes): commit many
 * zero-chunk files through dir.commit, then RSS, size on disk, restart time and dir.lookup latency.
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Channel } from "../src/transport/channel.js";
import { percentile } from "./baselines.js";
import { directoryChannel, readVm, startDfs, type Child } from "./cluster.js";
import { StallProbe } from "./stall.js";

export const EMPTY_SHA = createHash("sha256").digest("hex");
/** The stall probe's phase for the first commits of a fresh directory process. */
export const COLD_PHASE = "first commits";
/** Files per dir.commit in the metadata loads. */
export const BATCH = 1000;
const PER_FOLDER = 1000;

export interface MetaResult {
  files: number;
  batch: number;
  commitSeconds: number;
  commitFilesPerSec: number;
  /** After the load, before the restart. */
  rssBytes: number;
  peakRssBytes: number;
  /** After the restart (journal replay). */
  restartRssBytes: number;
  restartPeakRssBytes: number;
  snapshotBytes: number | null;
  journalBytes: number;
  diskBytes: number;
  diskNote: string;
  restartMs: number;
  restartListeningMs: number;
  emptyStartMs: number;
  lookups: number;
  lookupP50Ms: number;
  lookupP99Ms: number;
  lookupP50BeforeRestartMs: number;
  /** Longest event-loop stall of the directory, by phase (commit load, lookups, status, after the restart). */
  stallMs: Record<string, number>;
  /** Snapshots the directory wrote while loaded (each built by its checkpointer process). */
  snapshots: SnapshotFigures;
}

export interface SnapshotFigures {
  count: number;
  /** Longest synchronous step of a snapshot on the directory's event loop. */
  maxLoopBlockedMs: number | null;
  /** Longest time a checkpointer took to build and install one. */
  maxBuildMs: number | null;
  checkpointerPeakRssBytes: number | null;
}

/** Reads the `snapshot-written` lines of a directory's log (see metastore.ts). */
export function snapshotFigures(logFile: string): SnapshotFigures {
  const lines = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").split("\n").filter((l) => / snapshot-written(-from-memory)? /.test(l)) : [];
  const field = (k: string) => lines.map((l) => Number(new RegExp(` ${k}="?([\\d.]+)`).exec(l)?.[1])).filter(Number.isFinite);
  const max = (v: number[]) => (v.length ? Math.max(...v) : null);
  return { count: lines.length, maxLoopBlockedMs: max(field("loopBlockedMs")), maxBuildMs: max(field("ms")), checkpointerPeakRssBytes: max(field("checkpointerPeakRss")) };
}

/** The path of the i-th file of a metadata load: `digits` wide, so that paths sort as their numbers. */
export const metaPath = (i: number, digits = 7) =>
  `/meta/d${String(Math.floor(i / PER_FOLDER)).padStart(digits - 3, "0")}/f${String(i).padStart(digits, "0")}`;
const filePath = (i: number) => metaPath(i);

/** Latencies (ms, sorted) of `n` dir.lookup calls one at a time, of files numbered by `pick`, after 100 to warm up. */
export async function timedLookups(ch: Channel, pick: () => number, filePath: (i: number) => string, n: number): Promise<number[]> {
  const lat: number[] = [];
  for (let k = 0; k < n + 100; k++) {
    const i = pick();
    const t0 = performance.now();
    const info = await ch.request<{ size: number; path: string }>("dir.lookup", { path: filePath(i) });
    const ms = performance.now() - t0;
    if (info.path !== filePath(i)) throw new Error(`dir.lookup answered ${info.path} for ${filePath(i)}`);
    if (k >= 100) lat.push(ms); // the first 100 warm up
  }
  return lat.sort((a, b) => a - b);
}

function metaFiles(dir: string): { snapshot: number | null; journals: number } {
  let snapshot: number | null = null;
  let journals = 0;
  for (const name of fs.readdirSync(dir)) {
    const size = fs.statSync(path.join(dir, name)).size;
    if (name === "snapshot.db") snapshot = size;
    else if (/^journal\.\d+$/.test(name)) journals += size;
  }
  return { snapshot, journals };
}

export async function metadataScale(root: string, certs: string, logDir: string, files: number, progress: (s: string) => void): Promise<MetaResult> {
  const data = path.join(root, "meta-directory");
  // About three snapshots during any load (at 1,000,000 files the 64 MiB journal limit makes about as many).
  const snapshotEvery = Math.max(1, Math.floor(files / BATCH / 3));
  const args = ["--role", "directory", "--port", "0", "--host", "127.0.0.1", "--certs", certs, "--data", data, "--snapshot-every", String(snapshotEvery)];
  let dir: { child: Child; url: string; ms: number } | undefined;
  let ch: Channel | undefined;
  try {
    dir = await startDfs("meta-directory", args, logDir);
    const emptyStartMs = dir.ms;
    ch = await directoryChannel(dir.url, certs);
    let probe = await StallProbe.start(dir.url, certs);
    // The first commits of a fresh process run cold code; they are told apart from the steady load.
    probe.mark(COLD_PHASE);
    progress(`metadata: committing ${files} zero-chunk files in batches of ${BATCH}`);
    const t0 = performance.now();
    let lastReport = t0;
    // Two batches in flight: the next one crosses the wire while the directory applies the current one.
    let next = 0;
    const lane = async () => {
      while (next < files) {
        const from = next;
        next = Math.min(files, next + BATCH);
        const batch = [];
        for (let i = from; i < next; i++) batch.push({ path: filePath(i), size: 0, sha256: EMPTY_SHA, chunks: [] });
        await ch!.request("dir.commit", { files: batch }, { timeoutMs: 600_000 });
        if (next >= 10 * BATCH) probe.mark("commit load");
        if (performance.now() - lastReport > 10_000) {
          lastReport = performance.now();
          progress(`metadata: ${next} files committed (${((next / (lastReport - t0)) * 1000).toFixed(0)} files/s)`);
        }
      }
    };
    await Promise.all([lane(), lane()]);
    const commitSeconds = (performance.now() - t0) / 1000;
    progress(`metadata: ${files} files committed in ${commitSeconds.toFixed(1)} s; lookups before restart`);
    probe.mark("lookups");
    const before = await timedLookups(ch, () => Math.floor(Math.random() * files), filePath, 500);
    probe.mark("status");
    for (let k = 0; k < 20; k++) await ch.request("dir.status", {});
    const stallMs = probe.stop().maxMs;
    const vm = readVm(dir.child.pid);
    const disk = metaFiles(path.join(data, "meta"));
    const snapshots = snapshotFigures(dir.child.logFile);
    ch.close();

    progress("metadata: killing the directory (SIGKILL) and restarting it on the same data");
    await dir.child.kill();
    const r0 = performance.now();
    dir = await startDfs("meta-directory-restarted", args, logDir);
    const restartListeningMs = performance.now() - r0;
    ch = await directoryChannel(dir.url, certs);
    for (;;) {
      try {
        await ch.request("dir.lookup", { path: filePath(files - 1) });
        break;
      } catch (err) {
        if (performance.now() - r0 > 600_000) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const restartMs = performance.now() - r0;
    progress(`metadata: restart ${(restartMs / 1000).toFixed(2)} s; ${2000} random dir.lookup`);
    probe = await StallProbe.start(dir.url, certs);
    probe.mark("lookups after restart");
    const after = await timedLookups(ch, () => Math.floor(Math.random() * files), filePath, 2000);
    Object.assign(stallMs, probe.stop().maxMs);
    const vm2 = readVm(dir.child.pid);
    return {
      files, batch: BATCH, commitSeconds, commitFilesPerSec: files / commitSeconds,
      rssBytes: vm.rss, peakRssBytes: vm.hwm, restartRssBytes: vm2.rss, restartPeakRssBytes: vm2.hwm,
      snapshotBytes: disk.snapshot, journalBytes: disk.journals, diskBytes: (disk.snapshot ?? 0) + disk.journals,
      diskNote: disk.snapshot === null
        ? `no snapshot.db yet after ${Math.ceil(files / BATCH)} commit records: size = journal files (${disk.journals} bytes)`
        : `snapshot.db ${disk.snapshot} bytes + journals ${disk.journals} bytes`,
      restartMs, restartListeningMs, emptyStartMs,
      lookups: after.length, lookupP50Ms: percentile(after, 50), lookupP99Ms: percentile(after, 99), lookupP50BeforeRestartMs: percentile(before, 50),
      stallMs,
      snapshots,
    };
  } finally {
    ch?.close();
    await dir?.child.stop();
  }
}
