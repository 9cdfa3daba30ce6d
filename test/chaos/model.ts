import type { Ledger, Op } from "./ledger.js";

/** The value of a path that does not exist. */
export const ABSENT = "(absent)";

/** A change to one path, as the ledger shows it: when it may have taken effect and what it left there. */
export interface Mutation {
  path: string;
  /** What the path may hold after it (one value, or several for a rename of a path with several candidates). */
  values: Set<string>;
  start: number;
  /** Infinity when the call never returned. */
  end: number;
  /** ok: acknowledged; indet: may or may not have happened. Definite failures are not mutations. */
  acked: boolean;
  client: string;
  /** The calls it comes from (one, or a transaction's write and its commit). */
  ops: Op[];
}

/** A value seen at a path by a call that ran from `start` to `end`. */
export interface Observation {
  path: string;
  value: string;
  start: number;
  end: number;
  op: Op;
}

/** Where a transaction's calls are, by transaction id. */
interface Txn {
  begin: Op;
  writes: Op[];
  end?: Op;
}

const INITIAL = (path: string): Mutation => ({ path, values: new Set([ABSENT]), start: -Infinity, end: -Infinity, acked: true, client: "", ops: [] });

/** What a read's answer says: a content id, ABSENT, or the hash of bytes no write stored. */
export function valueOf(ledger: Ledger, op: Op): string | undefined {
  if (op.status === "ok" && typeof op.result?.sha256 === "string") return ledger.contentOf(op.result.sha256) ?? `unknown:${op.result.sha256}`;
  if (op.status === "fail" && op.code === "NOT_FOUND") return ABSENT;
  return undefined;
}

/**
 * Every path's history of mutations and observations, built from the ledger; answers which values a read
 * over a given time window may legally return (any change not yet superseded, Jepsen's register model).
 */
export class History {
  readonly mutations = new Map<string, Mutation[]>();
  readonly observations: Observation[] = [];
  readonly txns = new Map<number, Txn>();

  constructor(private readonly ledger: Ledger) {
    const renames: Op[] = [];
    for (const op of ledger.ops) {
      if (op.txn !== undefined) this.txnOp(op);
      else if (op.op === "write") this.change(op.path!, [op.content!], op.start, op.end, op, [op]);
      else if (op.op === "rm") this.removal(op, op.path!);
      else if (op.op === "mv") {
        this.removal(op, op.from!);
        renames.push(op);
      } else if (op.op === "read") this.observe(op);
    }
    for (const t of this.txns.values()) this.txnMutations(t);
    // A rename leaves at its new name whatever the old name held then; destinations are never renamed again.
    for (const op of renames) {
      const values = [...this.candidates(op.from!, op.start, op.end)].filter((v) => v !== ABSENT);
      // The old name's recent changes go with it as evidence: they say what the new name may hold.
      this.change(op.to!, values, op.start, op.end, op, [op, ...this.relevant(op.from!, op.end, 4).flatMap((m) => m.ops)]);
    }
  }

  paths(): string[] {
    return [...new Set([...this.mutations.keys(), ...this.observations.map((o) => o.path)])];
  }

  of(path: string): Mutation[] {
    return this.mutations.get(path) ?? [];
  }

  /**
   * Values a read of `path` running from `start` to `end` may return: those of every mutation that began
   * before the read ended and that no acknowledged mutation strictly between it and the read replaced.
   */
  candidates(path: string, start: number, end: number): Set<string> {
    const all = [INITIAL(path), ...this.of(path)];
    const acked = all.filter((m) => m.acked);
    const out = new Set<string>();
    for (const m of all) {
      if (m.start >= end) continue;
      if (acked.some((n) => n.start > m.end && n.end < start)) continue;
      for (const v of m.values) out.add(v);
    }
    return out;
  }

  /** Mutations a read's verdict depends on: those that ran before it ended, latest first, at most `max`. */
  relevant(path: string, end: number, max = 6): Mutation[] {
    return this.of(path).filter((m) => m.start < end).sort((a, b) => b.start - a.start).slice(0, max);
  }

  private change(path: string, values: string[], start: number, end: number, op: Op, ops: Op[], status = op.status): void {
    if (status !== "ok" && status !== "indet" && status !== "hung") return;
    const list = this.mutations.get(path) ?? [];
    list.push({ path, values: new Set(values), start, end, acked: status === "ok", client: op.client, ops });
    this.mutations.set(path, list);
  }

  private removal(op: Op, path: string): void {
    // "No such file" from rm or mv is a definite answer about the path: an observation.
    if (op.status === "fail" && op.code === "NOT_FOUND") this.observations.push({ path, value: ABSENT, start: op.start, end: op.end, op });
    else this.change(path, [ABSENT], op.start, op.end, op, [op]);
  }

  private observe(op: Op): void {
    const value = valueOf(this.ledger, op);
    if (value !== undefined) this.observations.push({ path: op.path!, value, start: op.start, end: op.end, op });
  }

  private txnOp(op: Op): void {
    if (op.op === "begin") {
      this.txns.set(op.txn!, { begin: op, writes: [] });
      return;
    }
    const t = this.txns.get(op.txn!);
    // A process that replaced a hung one has no open transaction: its calls stand alone.
    if (!t || op.client !== t.begin.client) {
      if (op.op === "write") this.change(op.path!, [op.content!], op.start, op.end, op, [op]);
      return;
    }
    if (op.op === "write") t.writes.push(op);
    else t.end = op;
  }

  /** A transaction's writes take effect together at its commit, if it committed (or may have). */
  private txnMutations(t: Txn): void {
    if (!t.end || t.end.op !== "commit") return;
    for (const w of t.writes) {
      if (w.status !== "ok") continue;
      this.change(w.path!, [w.content!], w.start, t.end.end, t.end, [w, t.end], t.end.status);
    }
  }
}
