import fs from "node:fs";
import path from "node:path";
import type { TestContext } from "node:test";
import type { StatusReply } from "../../src/protocol/directory.js";
import { Cluster } from "../helpers/cluster.js";
import { check, type Finding, type FinalRead } from "./checker.js";
import { faultLine, Ledger, opLine, type Op } from "./ledger.js";
import { valueOf } from "./model.js";
import { Nemesis, type Role } from "./nemesis.js";
import { Remote } from "./remote.js";
import { Worker } from "./workload.js";

export interface ChaosOptions {
  seed: number;
  /** How long clients work and the scheduler kills, ms. */
  durationMs: number;
  clients?: number;
  storage?: number;
  /** Roles the scheduler may kill (default all). */
  roles?: Role[];
  /** A call unanswered this long counts as hung. */
  deadlineMs?: number;
  /** Where to keep the ledger, the faults and the nodes' logs of this run (kept after the run). */
  logDir?: string;
  /** Progress lines (kills, phases) go here. */
  log?: (line: string) => void;
}

export interface ChaosResult {
  seed: number;
  counts: ReturnType<Ledger["counts"]>;
  lost: number;
  violations: number;
  findings: Finding[];
  kills: Nemesis["kills"];
  /** Failed calls by error code. */
  errors: Record<string, number>;
  /** The summary line, then (on failure) the findings with their ledger lines and the fault timeline. */
  report: string[];
}

const SETTLE_MS = 120_000;
/** How often each role is the scheduler's victim: storage most, the directory (which stops everything) less. */
const ODDS = { storage: 5, directory: 3, lock: 2 };

/** One seeded chaos run on a fresh cluster: work under faults, heal, verify, check. */
export async function runChaos(t: TestContext, opts: ChaosOptions): Promise<ChaosResult> {
  const log = opts.log ?? (() => {});
  const storage = opts.storage ?? 4;
  const ledger = new Ledger(log);
  const cluster = await new Cluster(t, {
    storage, deadAfter: 2, replicas: 2, directoryArgs: ["--chunk-size", "16384", "--orphan-grace", "2"],
  }).start();
  const remote = (name: string, l = ledger) =>
    new Remote(t, { name, directoryUrl: () => cluster.dirUrl, certs: cluster.certs, root: cluster.root, ledger: l, deadlineMs: opts.deadlineMs ?? 90_000 });
  const workers = Array.from({ length: opts.clients ?? 4 }, (_, i) => new Worker(opts.seed, i, remote(`c${i}`), ledger));
  const roles = opts.roles ?? ["directory", "lock", "storage"];
  const nemesis = new Nemesis(cluster, ledger, {
    seed: opts.seed, roles: Object.fromEntries(roles.map((r) => [r, ODDS[r]])), storage, gapMs: [2000, 8000], downMs: [300, 4000],
  });

  await Promise.all(workers.map((w) => w.connect()));
  const until = Date.now() + opts.durationMs;
  nemesis.start();
  const working = Promise.all(workers.map((w) => w.run(() => Date.now() > until)));
  await new Promise((r) => setTimeout(r, opts.durationMs));
  await nemesis.stop();
  log(`chaos over at ${(ledger.now() / 1000).toFixed(1)}s; waiting for calls in flight`);
  await working;

  const extra: Finding[] = [];
  await bringBack(nemesis, cluster, storage);
  const verifier = remote("verifier", new Ledger());
  const settled = await settle(verifier, storage);
  if (!settled.ok) extra.push({ lost: false, kind: "unsettled", message: settled.why, ops: [] });
  log(`cluster settled: ${settled.ok ? "yes" : settled.why}; probing every client`);
  for (const p of await Promise.all(workers.map((w) => w.probe(20_000)))) {
    if (p.status !== "ok") extra.push({ lost: false, kind: "no-recovery", message: `${p.client} could not write after the cluster healed: ${p.code} ${p.message}`, ops: [p] });
  }
  const { finals, problem } = await verify(verifier, ledger);
  if (problem) extra.push(problem);
  await Promise.all([...workers.map((w) => w.close()), verifier.close()]);

  const findings = [...check(ledger, finals), ...extra, ...faultFindings(ledger)];
  const result = summarize(opts.seed, ledger, nemesis, findings);
  if (opts.logDir) keepLogs(opts.logDir, ledger, nemesis, result);
  return result;
}

/** Every node the scheduler left down (a restart that failed twice) is started again. */
async function bringBack(nemesis: Nemesis, c: Cluster, storage: number): Promise<void> {
  if (!c.directory.alive) await nemesis.restart("directory", "directory", 0);
  if (!c.lock.alive) await nemesis.restart("lock", "lock", 0);
  for (let i = 0; i < storage; i++) if (!c.storage[i]!.alive) await nemesis.restart("storage", `storage-${i}`, i);
}

/** Waits until every node is up and nothing is under-replicated. */
async function settle(verifier: Remote, storage: number): Promise<{ ok: true } | { ok: false; why: string }> {
  const deadline = Date.now() + SETTLE_MS;
  let last = "no status answer";
  while (Date.now() < deadline) {
    const op = await verifier.call({ op: "status" });
    if (op.status === "ok") {
      const s = op.result!.status as StatusReply;
      const up = s.nodes.filter((n) => n.state === "up");
      const storageUp = up.filter((n) => n.role === "storage").length;
      if (storageUp >= storage && up.some((n) => n.role === "lock") && s.underReplicated === 0) return { ok: true };
      last = `storage up ${storageUp}/${storage}, lock ${up.some((n) => n.role === "lock") ? "up" : "down"}, under-replicated chunks ${s.underReplicated}`;
    } else last = `${op.code} ${op.message}`;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return { ok: false, why: `not settled after ${SETTLE_MS / 1000}s: ${last}` };
}

/** A fresh client reads every path the run touched or the directory lists, retrying what may be transient. */
async function verify(verifier: Remote, ledger: Ledger): Promise<{ finals: FinalRead[]; problem?: Finding }> {
  const listed = await verifier.call({ op: "ls", prefix: "/" });
  const paths = new Set<string>(ledger.ops.flatMap((o) => [o.path, o.from, o.to]).filter((p): p is string => p !== undefined));
  for (const p of (listed.result?.paths as string[] | undefined) ?? []) paths.add(p);
  const finals: FinalRead[] = [];
  for (const p of [...paths].sort()) {
    const start = ledger.now();
    let op: Op | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      op = await verifier.call({ op: "read", path: p });
      if (op.status === "ok" || op.code === "NOT_FOUND") break;
      await new Promise((r) => setTimeout(r, 1500));
    }
    const value = valueOf(ledger, op!);
    finals.push({ path: p, value, start, end: ledger.now(), ...(value === undefined ? { error: `${op!.code} ${op!.message}` } : {}) });
  }
  if (listed.status === "ok") return { finals };
  return { finals, problem: { lost: false, kind: "unverified", message: `ls / failed after the cluster healed: ${listed.code} ${listed.message}`, ops: [listed] } };
}

/** Crashed clients and nodes that would not start again are findings of their own. */
function faultFindings(ledger: Ledger): Finding[] {
  const out: Finding[] = ledger.exits.map((e) => ({
    lost: false, kind: "client-crash", message: `${e.client} exited with ${e.code} at ${(e.at / 1000).toFixed(1)}s: ${e.stderr.trim().split("\n").slice(-3).join(" / ")}`, ops: [],
  }));
  const lastOf = new Map<string, string>();
  for (const f of ledger.faults) lastOf.set(f.target, f.action);
  for (const [target, action] of lastOf) {
    if (action === "restart-failed") out.push({ lost: false, kind: "restart-failed", message: `${target} did not start again: ${ledger.faults.filter((f) => f.target === target).at(-1)!.detail}`, ops: [] });
  }
  return out;
}

function summarize(seed: number, ledger: Ledger, nemesis: Nemesis, findings: Finding[]): ChaosResult {
  const counts = ledger.counts();
  const lost = findings.filter((f) => f.lost).length;
  const violations = findings.length - lost;
  const errors: Record<string, number> = {};
  for (const o of ledger.ops) if (o.code) errors[o.code] = (errors[o.code] ?? 0) + 1;
  const k = nemesis.kills;
  const report = [
    `seed=${seed} tried=${counts.tried} acknowledged=${counts.acknowledged} failed=${counts.failed} indeterminate=${counts.indeterminate} ` +
      `lost=${lost} hung=${counts.hung} violations=${violations} kills=directory:${k.directory},lock:${k.lock},storage:${k.storage} ` +
      `errors=${Object.entries(errors).map(([c, n]) => `${c}:${n}`).join(",") || "none"}`,
  ];
  for (const f of findings) {
    report.push(`${f.lost ? "LOST" : "VIOLATION"} ${f.kind}: ${f.message}`);
    for (const op of f.ops) report.push(`  ${opLine(op)}`);
  }
  const hung = ledger.ops.filter((o) => o.status === "hung");
  for (const op of hung) report.push(`HUNG ${opLine(op)}`);
  if (findings.length > 0 || hung.length > 0) {
    report.push("faults:");
    for (const f of ledger.faults) report.push(`  ${faultLine(f)}`);
  }
  return { seed, counts, lost, violations, findings, kills: { ...k }, errors, report };
}

function keepLogs(dir: string, ledger: Ledger, nemesis: Nemesis, result: ChaosResult): void {
  const out = path.join(dir, `seed-${result.seed}`);
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, "ledger.jsonl"), ledger.ops.map(opLine).join("\n") + "\n");
  fs.writeFileSync(path.join(out, "faults.jsonl"), [...ledger.faults, ...ledger.losses].map((f) => JSON.stringify(f)).join("\n") + "\n");
  fs.writeFileSync(path.join(out, "report.txt"), result.report.join("\n") + "\n");
  for (const e of ledger.exits) fs.writeFileSync(path.join(out, `client-${e.client}.stderr`), e.stderr);
  for (const [name, p] of nemesis.processes()) fs.writeFileSync(path.join(out, `${name}.log`), p.stderr);
}

/** Options from the environment: CHAOS_SEED (replay one seed), CHAOS_DURATION (s), CHAOS_KILL (roles), CHAOS_LOG_DIR. */
export function envOptions(defaultDurationS: number): Omit<ChaosOptions, "seed"> & { seed?: number } {
  const env = process.env;
  const roles = env.CHAOS_KILL?.split(",").map((r) => r.trim()) as Role[] | undefined;
  for (const r of roles ?? []) if (!["directory", "lock", "storage"].includes(r)) throw new Error(`CHAOS_KILL: unknown role ${r}`);
  return {
    ...(env.CHAOS_SEED ? { seed: Number(env.CHAOS_SEED) } : {}),
    durationMs: Number(env.CHAOS_DURATION ?? defaultDurationS) * 1000,
    ...(roles ? { roles } : {}),
    ...(env.CHAOS_LOG_DIR ? { logDir: env.CHAOS_LOG_DIR } : {}),
    log: (line) => console.log(line),
  };
}

/** A seed nobody chose: printed first, so that the run can be replayed. */
export function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 31);
}
