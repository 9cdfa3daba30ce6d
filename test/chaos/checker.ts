import type { Ledger, Op } from "./ledger.js";
import { checkLocks } from "./locks.js";
import { ABSENT, History, type Mutation } from "./model.js";

/** One thing the checker found wrong, with the ledger entries that show it. */
export interface Finding {
  /** Lost: acknowledged data is gone. Otherwise a violation of one of the run's promises. */
  lost: boolean;
  kind: string;
  message: string;
  ops: Op[];
}

/** What a fresh client found at a path after the cluster healed. */
export interface FinalRead {
  path: string;
  /** A content id, ABSENT, `unknown:<sha>`, or undefined when it could not be read at all. */
  value?: string;
  error?: string;
  start: number;
  end: number;
}

const show = (vals: Iterable<string>) => [...vals].join(" | ") || "(nothing)";
const opsOf = (ms: Mutation[]) => ms.flatMap((m) => m.ops);

/**
 * Checks a run the way Jepsen does: reads during the run and the final state against the acknowledged
 * history, transactions all or nothing, and the lock rules of {@link checkLocks}.
 */
export function check(ledger: Ledger, finals: FinalRead[]): Finding[] {
  const h = new History(ledger);
  const findings: Finding[] = [];
  for (const o of h.observations) {
    const allowed = h.candidates(o.path, o.start, o.end);
    if (allowed.has(o.value)) continue;
    findings.push({
      lost: false,
      kind: o.value.startsWith("unknown:") ? "corrupt-read" : "stale-read",
      message: `${o.op.client} #${o.op.id} ${o.op.op} ${o.path} saw ${o.value}; allowed then: ${show(allowed)}`,
      ops: [o.op, ...opsOf(h.relevant(o.path, o.end))],
    });
  }
  const finalValue = new Map<string, string | undefined>();
  for (const f of finals) {
    finalValue.set(f.path, f.value);
    const finding = checkFinal(h, f);
    if (finding) findings.push(finding);
  }
  findings.push(...checkTransactions(h, finalValue));
  findings.push(...checkLocks(ledger, h));
  return findings;
}

function checkFinal(h: History, f: FinalRead): Finding | undefined {
  const allowed = h.candidates(f.path, f.start, f.end);
  if (f.value !== undefined && allowed.has(f.value)) return undefined;
  const ops = opsOf(h.relevant(f.path, f.end));
  const mustExist = !allowed.has(ABSENT);
  const where = `${f.path}: expected ${show(allowed)}`;
  if (f.value === undefined) {
    return mustExist
      ? { lost: true, kind: "lost", message: `${where}, but it cannot be read: ${f.error}`, ops }
      : { lost: false, kind: "unreadable", message: `${where}, but it is listed and cannot be read: ${f.error}`, ops };
  }
  if (f.value.startsWith("unknown:")) return { lost: false, kind: "corrupt", message: `${where}, found bytes no write stored (${f.value})`, ops };
  if (f.value === ABSENT) return { lost: true, kind: "lost", message: `${where}, but it is gone`, ops };
  if (!mustExist) return { lost: false, kind: "reappeared", message: `${where}, but it holds ${f.value}`, ops };
  return { lost: true, kind: "lost", message: `${where}, found ${f.value} (an acknowledged later version is lost)`, ops };
}

/** A committed transaction shows all its writes or none (unless a later change replaced one). */
function checkTransactions(h: History, finalValue: Map<string, string | undefined>): Finding[] {
  const out: Finding[] = [];
  for (const [id, t] of h.txns) {
    if (t.end?.op !== "commit" || t.end.status === "fail") continue;
    const writes = t.writes.filter((w) => w.status === "ok");
    const shown = writes.filter((w) => finalValue.get(w.path!) === w.content);
    if (shown.length === 0 || shown.length === writes.length) continue;
    for (const w of writes) {
      if (shown.includes(w)) continue;
      // Another change that may have landed after this commit (a writer queued behind its lock, say) explains it.
      if (h.of(w.path!).some((m) => m.end > w.start && !m.ops.includes(w))) continue;
      out.push({
        lost: false,
        kind: "partial-transaction",
        message: `transaction ${id} of ${t.begin.client}: ${shown.map((s) => s.path).join(", ")} show its writes, ${w.path} holds ${finalValue.get(w.path!) ?? "nothing readable"}`,
        ops: [t.begin, ...t.writes, t.end],
      });
    }
  }
  return out;
}
