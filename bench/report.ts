/** Turns the measured figures into rows (dfs figure, target, baseline, ratio, met) and a markdown table. */
import type { Baselines } from "./baselines.js";
import { COLD_PHASE, type MetaResult } from "./metadata.js";
import type { S3Result } from "./s3.js";
import type { LargeResult, OpFigure, SmallResult } from "./workloads.js";

const MiB = 1024 * 1024;

export interface Row {
  section: string;
  figure: string;
  value: number;
  unit: string;
  /** The target as text, and as a check on the value or on the ratio. */
  target: string;
  baselineName: string;
  baselineValue: number | null;
  /** value / baselineValue. */
  ratio: number | null;
  met: boolean | null;
}

interface Check {
  /** "min": at least; "max": at most. */
  kind: "min" | "max";
  /** On the value itself... */
  abs?: number;
  /** ...or on value / baseline. */
  rel?: number;
}

export interface Results {
  baselines: Baselines;
  /** CPUs of the machine, which every process of the run shares. */
  cores: number;
  large?: LargeResult;
  storagePeakRss?: { name: string; bytes: number }[];
  small?: SmallResult;
  metadata?: MetaResult;
  s3?: S3Result;
}

const num = (v: number, digits: number) => (Number.isFinite(v) ? v.toFixed(digits) : "n/a");
const fmt: Record<string, (v: number) => string> = {
  "MiB/s": (v) => `${num(v, 1)} MiB/s`,
  "ops/s": (v) => `${num(v, 0)} ops/s`,
  "files/s": (v) => `${num(v, 0)} files/s`,
  ms: (v) => `${num(v, v < 10 ? 2 : 1)} ms`,
  s: (v) => `${num(v, 2)} s`,
  bytes: (v) => `${num(v / MiB, 1)} MiB`,
};
const show = (v: number, unit: string) => (fmt[unit] ?? ((x: number) => `${num(x, 2)} ${unit}`))(v);

export function buildRows(r: Results): Row[] {
  const rows: Row[] = [];
  const b = r.baselines;
  const base = {
    wss: ["wss+mTLS 1 MiB frames", "wss", b.wss.MiBs, "MiB/s"],
    sha: ["SHA-256, one core", "SHA-256", b.sha256MiBs, "MiB/s"],
    runtime: [b.runtime.label, "runtime", b.runtime.rssBytes, "bytes"],
    rtt: ["wss+mTLS round trip p50", "RTT", b.wss.rttP50Us / 1000, "ms"],
    reqs: ["wss+mTLS requests/s (16 in flight)", "requests/s", b.wss.requestsPerSec, "ops/s"],
    fsync: ["1 KiB write+fsync", "fsync/s", b.disk.fsyncPerSec, "ops/s"],
    start: [`${b.runtime.label} start`, "runtime start", b.runtime.startMs / 1000, "s"],
  } as const satisfies Record<string, readonly [string, string, number, string]>;
  type BaseKey = keyof typeof base;
  const add = (section: string, figure: string, value: number, unit: string, baseKey: BaseKey | null, check?: Check, targetText?: string) => {
    const [bn, short, bv, bu] = baseKey ? base[baseKey] : ["", "", null, ""];
    const ratio = bv ? value / bv : null;
    let met: boolean | null = null;
    let target = "—";
    if (check) {
      const x = check.rel !== undefined ? ratio : value;
      const limit = check.rel ?? check.abs!;
      met = x === null || !Number.isFinite(x) ? false : check.kind === "min" ? x >= limit : x <= limit;
      const op = check.kind === "min" ? "≥" : "≤";
      target = targetText ?? (check.rel !== undefined
        ? `${op} ${check.rel}× ${short} (${show(check.rel * (bv ?? NaN), bu)})`
        : `${op} ${show(check.abs!, unit)}`);
    }
    rows.push({ section, figure, value, unit, target, baselineName: bn ? `${bn}: ${show(bv!, bu)}` : "—", baselineValue: bv, ratio, met });
  };

  if (r.large) {
    const L = r.large;
    const s = `large file (${num(L.size / MiB, 0)} MiB)`;
    add(s, "write (from a local file)", L.write.MiBs, "MiB/s", "wss", { kind: "min", rel: 0.5 });
    add(s, "cold read (empty cache)", L.coldRead.MiBs, "MiB/s", "wss", { kind: "min", rel: 0.8 });
    add(s, "warm read (cache populated)", L.warmRead.MiBs, "MiB/s", "sha", { kind: "min", rel: 0.8 });
    for (const [what, f] of [["write", L.write], ["cold read", L.coldRead], ["warm read", L.warmRead]] as const) {
      const cpu = f.cpuMsPerMiB;
      if (!cpu?.client) continue;
      const total = Object.values(cpu).reduce((a, b) => a + b, 0);
      add(s, `CPU per MiB, ${what} (${Object.entries(cpu).map(([k, v]) => `${k} ${num(v, 2)}`).join(", ")})`, total, "ms", null);
      add(s, `ceiling of the ${what}: ${r.cores} cores / CPU per MiB`, (r.cores * 1000) / total, "MiB/s", null);
    }
    add(s, "client peak RSS, write", L.write.clientPeakRss, "bytes", "runtime", { kind: "max", abs: 150 * MiB });
    add(s, "client peak RSS, cold read", L.coldRead.clientPeakRss, "bytes", "runtime", { kind: "max", abs: 150 * MiB });
    add(s, "client peak RSS, warm read", L.warmRead.clientPeakRss, "bytes", "runtime", { kind: "max", abs: 150 * MiB });
  }
  for (const n of r.storagePeakRss ?? []) {
    add("storage nodes (whole run)", `${n.name} peak RSS`, n.bytes, "bytes", "runtime", { kind: "max", abs: 150 * MiB });
  }
  /** CPU per operation summed over every process, and the rate the machine's cores allow at that cost. */
  const cpuRows = (s: string, what: string, f: OpFigure) => {
    if (!f.cpuMsPerOp) return;
    const total = Object.values(f.cpuMsPerOp).reduce((a, b) => a + b, 0);
    const parts = Object.entries(f.cpuMsPerOp).map(([k, v]) => `${k} ${num(v, 2)}`).join(", ");
    add(s, `CPU per ${what}, all processes (${parts})`, total, "ms", null);
    add(s, `ceiling: ${r.cores} cores / CPU per ${what}`, (r.cores * 1000) / total, "ops/s", null);
  };
  if (r.small) {
    const S = r.small;
    const p = (k: string) => S.phases[k] as OpFigure | undefined;
    for (const set of S.sets) {
      const s = `small files (${set.count} × ${set.size >= 1024 * 1024 ? `${set.size / MiB} MiB` : `${set.size / 1024} KiB`}, ${S.clients} clients)`;
      const w = p(`write:${set.name}`);
      const rd = p(`read:${set.name}`);
      const is1k = set.name === "1k";
      if (w) {
        add(s, "write", w.opsPerSec, "ops/s", "fsync", is1k ? { kind: "min", abs: 2600 } : undefined);
        add(s, "write p50", w.p50Ms, "ms", "rtt");
        add(s, "write p99", w.p99Ms, "ms", "rtt", is1k ? { kind: "max", abs: 50 } : undefined);
        cpuRows(s, "write", w);
      }
      if (rd) {
        add(s, "read", rd.opsPerSec, "ops/s", "reqs", is1k ? { kind: "min", abs: 8000 } : undefined);
        add(s, "read p50", rd.p50Ms, "ms", "rtt");
        add(s, "read p99", rd.p99Ms, "ms", "rtt");
        cpuRows(s, "read", rd);
      }
    }
    for (const [k, label] of [["stat:1k", "stat"], ["ls:1k", "ls (one client folder)"], ["lock:1k", "lock + unlock"]] as const) {
      const f = p(k);
      if (!f) continue;
      const s = `namespace ops (${S.clients} clients)`;
      add(s, label, f.opsPerSec, "ops/s", "reqs");
      add(s, `${label.split(" ")[0]} p50`, f.p50Ms, "ms", "rtt");
    }
  }
  if (r.s3) {
    const S = r.s3;
    const s = `S3 gateway (${num(S.size / MiB, 0)} MiB object; ${S.small.count} × 1 KiB objects, ${S.small.clients} clients)`;
    const beside = (v: number | undefined, unit: string) => (v === undefined ? "" : ` (native client in this run: ${show(v, unit)})`);
    const oneK = r.small?.phases["write:1k"] as OpFigure | undefined;
    const oneKRead = r.small?.phases["read:1k"] as OpFigure | undefined;
    add(s, `PutObject${beside(r.large?.write.MiBs, "MiB/s")}`, S.put.MiBs, "MiB/s", "wss");
    add(s, `GetObject${beside(r.large?.coldRead.MiBs, "MiB/s")}`, S.get.MiBs, "MiB/s", "wss");
    for (const [what, f] of [["PutObject", S.put], ["GetObject", S.get]] as const) {
      add(s, `CPU per MiB, ${what} (${Object.entries(f.cpuMsPerMiB).map(([k, v]) => `${k} ${num(v, 2)}`).join(", ")})`, Object.values(f.cpuMsPerMiB).reduce((a, b) => a + b, 0), "ms", null);
    }
    add(s, `1 KiB PutObject${beside(oneK?.opsPerSec, "ops/s")}`, S.small.put.opsPerSec, "ops/s", "fsync");
    add(s, "1 KiB PutObject p99", S.small.put.p99Ms, "ms", "rtt");
    cpuRows(s, "1 KiB PutObject", S.small.put);
    add(s, `1 KiB GetObject${beside(oneKRead?.opsPerSec, "ops/s")}`, S.small.get.opsPerSec, "ops/s", "reqs");
    add(s, "1 KiB GetObject p99", S.small.get.p99Ms, "ms", "rtt");
    cpuRows(s, "1 KiB GetObject", S.small.get);
    add(s, "gateway peak RSS (whole section)", S.gatewayPeakRss, "bytes", "runtime");
  }
  if (r.metadata) {
    const M = r.metadata;
    const s = `metadata scale (${M.files} files in one directory process)`;
    add(s, "directory peak RSS after the load", M.peakRssBytes, "bytes", "runtime", { kind: "max", abs: 1024 * MiB });
    add(s, "directory peak RSS after restart", M.restartPeakRssBytes, "bytes", "runtime", { kind: "max", abs: 1024 * MiB });
    const perFile = `${num(M.diskBytes / M.files, 0)} B/file`;
    add(s, `metadata on disk (${M.snapshotBytes === null ? "journal only, no snapshot yet" : "snapshot + journal"}; ${perFile})`, M.diskBytes, "bytes", null);
    add(s, "restart (kill -9 to first dir.lookup answer)", M.restartMs / 1000, "s", "start", { kind: "max", abs: 15 });
    add(s, "dir.lookup p50 (random paths)", M.lookupP50Ms, "ms", "rtt", { kind: "max", abs: 1 });
    add(s, "dir.lookup p99", M.lookupP99Ms, "ms", "rtt");
    add(s, `commit rate (dir.commit, ${M.batch.toLocaleString("en-US")} files a batch)`, M.commitFilesPerSec, "files/s", null);
    // The first commits of a fresh process run cold code (compilation, first statements): shown apart,
    // since the target is about the directory at scale.
    const { [COLD_PHASE]: cold, ...atScale } = M.stallMs;
    const stalls = Object.entries(atScale);
    const worst = stalls.reduce((a, b) => (b[1] > a[1] ? b : a), ["none", 0] as [string, number]);
    add(s, `directory's longest event-loop stall at scale (${worst[0]}; ${stalls.map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(", ")})`, worst[1], "ms", null, { kind: "max", abs: 100 });
    if (cold !== undefined) add(s, "directory's longest event-loop stall in its first 10 commits (cold code)", cold, "ms", null);
    const S = M.snapshots;
    if (S.maxLoopBlockedMs !== null) {
      add(s, `snapshot: longest event-loop block in the directory (${S.count} during the load)`, S.maxLoopBlockedMs, "ms", "rtt", { kind: "max", abs: 100 });
    }
    if (S.maxBuildMs !== null) add(s, "snapshot: longest build by the checkpointer process", S.maxBuildMs / 1000, "s", null);
    if (S.checkpointerPeakRssBytes !== null) add(s, "checkpointer process peak RSS", S.checkpointerPeakRssBytes, "bytes", "runtime");
  }
  return rows;
}

export function baselineTable(b: Baselines): string {
  const lines = [
    "| machine baseline | value | how |",
    "|---|---|---|",
    `| local disk write + fsync | ${show(b.disk.writeFsyncMiBs, "MiB/s")} | ${num(b.disk.bytes / MiB, 0)} MiB in 4 MiB writes, one fsync |`,
    `| local disk read | ${show(b.disk.readMiBs, "MiB/s")} | the same file read back; page cache not dropped |`,
    `| 1 KiB write + fsync | ${show(b.disk.fsyncPerSec, "ops/s")} | overwrite + fsync in a loop for 1 s |`,
    `| SHA-256 (node:crypto) | ${show(b.sha256MiBs, "MiB/s")} | one hash per 4 MiB piece, one core |`,
    `| wss+mTLS, 1 MiB frames | ${show(b.wss.MiBs, "MiB/s")} | one connection of our transport, ${b.wss.inflight} requests in flight, ${num(b.wss.bytes / MiB, 0)} MiB |`,
    `| wss+mTLS round trip | p50 ${num(b.wss.rttP50Us, 0)} µs, p99 ${num(b.wss.rttP99Us, 0)} µs | empty request, one at a time, 2,000 samples |`,
    `| wss+mTLS request rate | ${show(b.wss.requestsPerSec, "ops/s")} | empty requests, 16 in flight, 1 s |`,
    `| ${b.runtime.label} | ${show(b.runtime.rssBytes, "bytes")} peak RSS, ${num(b.runtime.startMs, 0)} ms to start | ${b.runtime.note} |`,
  ];
  return lines.join("\n");
}

export function rowsTable(rows: Row[]): string {
  const out = ["| section | figure | dfs | target | baseline | ratio | met |", "|---|---|---|---|---|---|---|"];
  let last = "";
  for (const r of rows) {
    const section = r.section === last ? "" : r.section;
    last = r.section;
    const ratio = r.ratio === null ? "—" : `${num(r.ratio, r.ratio < 0.1 ? 3 : 2)}×`;
    const met = r.met === null ? "—" : r.met ? "met" : "**not met**";
    out.push(`| ${section} | ${r.figure} | ${show(r.value, r.unit)} | ${r.target} | ${r.baselineName} | ${ratio} | ${met} |`);
  }
  return out.join("\n");
}
