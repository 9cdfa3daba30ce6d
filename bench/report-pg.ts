/** The markdown tables of `--metadata postgres`: small files over each metadata back end, and metadata scale on PostgreSQL. */
import type { PgMetaResult } from "./metadata-pg.js";
import type { PgResults } from "./pg-runs.js";
import type { OpFigure, SmallResult } from "./workloads.js";

const MiB = 1024 * 1024;
/** "Flat" read as a number: the directory's RSS at the last checkpoint at most this times its RSS at the first. */
const RSS_GROWTH_TARGET = 1.25;
/** From the issue: dir.lookup p50 at the last checkpoint within 2× of its value at the first (100,000 files). */
const LOOKUP_RATIO_TARGET = 2;

const ms = (v: number) => (Number.isFinite(v) ? `${v.toFixed(v < 10 ? 2 : 1)} ms` : "n/a");
const ops = (v: number) => (Number.isFinite(v) ? `${v.toFixed(0)} ops/s` : "n/a");
const mib = (v: number) => `${(v / MiB).toFixed(1)} MiB`;
const count = (n: number) => n.toLocaleString("en-US");
const met = (ok: boolean) => (ok ? "met" : "**not met**");

/** One row per 1 KiB figure; one column per back end (sql.js from the same run's main cluster when it ran). */
export function pgSmallTable(p: NonNullable<PgResults["small"]>, sqlite: SmallResult | undefined): string {
  const cols: [string, SmallResult][] = [
    ...(sqlite ? [["sql.js, 1 directory", sqlite] as [string, SmallResult]] : []),
    ["PostgreSQL, 1 directory", p.oneDirectory],
    ["PostgreSQL, 2 directories", p.twoDirectories],
  ];
  const set = p.oneDirectory.sets.find((s) => s.name === "1k")!;
  const lines = [
    `| small files (${count(set.count)} × 1 KiB, ${p.oneDirectory.clients} clients) | ${cols.map(([name]) => name).join(" | ")} |`,
    `|---|${cols.map(() => "---").join("|")}|`,
  ];
  const row = (label: string, phase: string, pick: (f: OpFigure) => string) => {
    const cells = cols.map(([, r]) => {
      const f = r.phases[phase];
      if (!f) return "—";
      return pick(f) + (f.errors ? ` (${f.errors} errors)` : "");
    });
    lines.push(`| ${label} | ${cells.join(" | ")} |`);
  };
  for (const [label, phase] of [["write", "write:1k"], ["read", "read:1k"], ["stat", "stat:1k"], ["ls (one client folder)", "ls:1k"], ["lock + unlock", "lock:1k"]] as const) {
    row(label, phase, (f) => ops(f.opsPerSec));
    row(`${label.split(" ")[0]} p50 / p99`, phase, (f) => `${ms(f.p50Ms)} / ${ms(f.p99Ms)}`);
  }
  return lines.join("\n");
}

/** One row per checkpoint, then the checks on RSS and lookup latency. */
export function pgMetaTable(m: PgMetaResult): string {
  const first = m.checkpoints[0]!;
  const last = m.checkpoints.at(-1)!;
  const lines = [
    `| metadata on PostgreSQL: files committed | directory RSS | database on disk | dir.lookup p50 / p99 | commit rate since the previous row |`,
    "|---|---|---|---|---|",
    ...m.checkpoints.map((c) =>
      `| ${count(c.files)} | ${mib(c.rssBytes)} | ${mib(c.databaseBytes)} (${(c.databaseBytes / c.files).toFixed(0)} B/file) | ${ms(c.lookupP50Ms)} / ${ms(c.lookupP99Ms)} | ${count(Math.round(c.commitFilesPerSec))} files/s |`),
    "",
    "| metadata on PostgreSQL | value | target | met |",
    "|---|---|---|---|",
    `| directory RSS at ${count(last.files)} / at ${count(first.files)} files | ${m.rssGrowth.toFixed(2)}× (${mib(last.rssBytes)} / ${mib(first.rssBytes)}) | ≤ ${RSS_GROWTH_TARGET}× (flat) | ${met(m.rssGrowth <= RSS_GROWTH_TARGET)} |`,
    `| directory peak RSS (whole load) | ${mib(last.peakRssBytes)} | — | — |`,
    `| dir.lookup p50 at ${count(last.files)} / at ${count(first.files)} files | ${m.lookupP50Ratio.toFixed(2)}× (${ms(last.lookupP50Ms)} / ${ms(first.lookupP50Ms)}) | ≤ ${LOOKUP_RATIO_TARGET}× | ${met(m.lookupP50Ratio <= LOOKUP_RATIO_TARGET)} |`,
    `| commit rate (dir.commit, ${count(m.batch)} files a batch, ${m.lanes} channels) | ${count(Math.round(m.commitFilesPerSec))} files/s (${count(m.files)} files in ${m.commitSeconds.toFixed(0)} s) | — | — |`,
  ];
  return lines.join("\n");
}
