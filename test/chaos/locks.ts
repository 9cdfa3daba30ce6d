import type { Finding } from "./checker.js";
import type { Ledger, Op } from "./ledger.js";
import { valueOf, type History } from "./model.js";

/** lock .. unlock by one client process, with the calls it made in between. */
interface Section {
  id: number;
  client: string;
  path: string;
  grant: Op;
  ops: Op[];
}

/** A lock this client was told it holds: from `lock`, or re-taken by the library inside a write. */
interface Grant {
  client: string;
  path: string;
  token: number;
  /** When the client learnt of it. */
  ack: number;
  op: Op;
}

function sections(ledger: Ledger): Section[] {
  const byId = new Map<number, Section>();
  for (const op of ledger.ops) {
    if (op.section === undefined) continue;
    const s = byId.get(op.section);
    if (!s) {
      if (op.op === "lock") byId.set(op.section, { id: op.section, client: op.client, path: op.path!, grant: op, ops: [] });
    } else if (op.client === s.client) {
      // A process that replaced a hung one holds nothing: its calls are not the section's.
      s.ops.push(op);
    }
  }
  return [...byId.values()].filter((s) => s.grant.status === "ok");
}

function grants(all: Section[]): Grant[] {
  const out: Grant[] = [];
  for (const s of all) {
    const token = s.grant.result!.token as number;
    out.push({ client: s.client, path: s.path, token, ack: s.grant.end, op: s.grant });
    const again = new Set<number>([token]);
    for (const op of s.ops) {
      const t = op.lease?.token;
      if (op.op !== "write" || op.status !== "ok" || t === undefined || again.has(t)) continue;
      again.add(t);
      out.push({ client: s.client, path: s.path, token: t, ack: op.end, op });
    }
  }
  return out;
}

/**
 * A token granted again is the same lease taken up again, not a second grant, only when it goes to the same
 * client for the same path and no acknowledged unlock of that path by the client came in between (a failed
 * unlock leaves the lease running until it ends, and asking again returns it).
 */
function stillHeld(ledger: Ledger, first: Grant, again: Grant): boolean {
  if (first.client !== again.client || first.path !== again.path) return false;
  return !ledger.ops.some((o) => o.op === "unlock" && o.status === "ok" && o.client === first.client && o.path === first.path && o.start > first.ack && o.end < again.op.start);
}

/** A call of the holder that relied on its lock: answered, and with the lease not reported lost. */
const relied = (op: Op) =>
  op.op !== "unlock" && op.lease !== undefined && !op.lease.lost && (op.status === "ok" || (op.status === "fail" && op.code === "NOT_FOUND"));

/**
 * No two clients hold one lock at once, checked with the tokens: no token is granted twice; no acknowledged
 * change under token t started after a newer token for its path was granted to someone else; nobody else's
 * change lands inside a lock section while its holder goes on relying on the lock; and a holder reads back its own write.
 */
export function checkLocks(ledger: Ledger, h: History): Finding[] {
  const all = sections(ledger);
  const given = grants(all);
  const out: Finding[] = [];

  const byToken = new Map<number, Grant[]>();
  for (const g of given) byToken.set(g.token, [...(byToken.get(g.token) ?? []), g]);
  for (const [token, gs] of byToken) {
    if (gs.length < 2 || !gs.some((g, i) => i > 0 && !stillHeld(ledger, gs[i - 1]!, g))) continue;
    out.push({ lost: false, kind: "double-grant", message: `token ${token} was granted ${gs.length} times: ${gs.map((g) => `${g.client} on ${g.path}`).join(", ")}`, ops: gs.map((g) => g.op) });
  }

  for (const m of ledger.ops) {
    if (m.status !== "ok" || m.txn !== undefined || !m.lease || !["write", "rm", "mv"].includes(m.op)) continue;
    const path = m.path ?? m.from!;
    const newer = given.find((g) => g.path === path && g.client !== m.client && g.token > m.lease!.token && g.ack < m.start);
    if (!newer) continue;
    out.push({
      lost: false,
      kind: "superseded-token",
      message: `${m.client} #${m.id} ${m.op} ${path} under token ${m.lease.token} was acknowledged, but began after token ${newer.token} was granted to ${newer.client}`,
      ops: [newer.op, m],
    });
  }

  for (const s of all) {
    const leaning = s.ops.filter(relied);
    /** Holder calls already shown to have followed someone else's change: their read-back says nothing new. */
    const explained = new Set<Op>();
    for (const m of h.of(s.path)) {
      if (!m.acked || m.client === s.client || m.start <= s.grant.end) continue;
      const after = leaning.find((x) => x.end > m.end);
      if (!after) continue;
      explained.add(after);
      const first = m.ops[0]!;
      const unlocked = (first.op === "rm" || first.op === "mv") && !first.lease;
      out.push({
        lost: false,
        kind: unlocked ? "unlocked-change" : "concurrent-holder",
        message: `${first.client} #${first.id} ${first.op} ${s.path}${unlocked ? " without the lock" : ""} was acknowledged while ${s.client} held the lock (token ${s.grant.result!.token}) and went on using it (#${after.id})`,
        ops: [s.grant, ...m.ops, after],
      });
    }
    out.push(...readBack(ledger, h, s).filter((f) => !explained.has(f.ops.at(-1)!)));
  }
  return out;
}

/** Inside a section, a read after our acknowledged write returns that write. */
function readBack(ledger: Ledger, h: History, s: Section): Finding[] {
  const out: Finding[] = [];
  let last: Op | undefined;
  for (const op of s.ops) {
    if (op.op === "write") last = op.status === "ok" && op.lease && !op.lease.lost ? op : undefined;
    if (op.op !== "read" || !last || !relied(op)) continue;
    const value = valueOf(ledger, op);
    if (value === last.content) continue;
    out.push({
      lost: false,
      kind: "lock-read-back",
      message: `${s.client} holds the lock on ${s.path} (token ${s.grant.result!.token}) and wrote ${last.content} (#${last.id}), but read ${value} (#${op.id})`,
      ops: [s.grant, last, ...h.of(s.path).filter((m) => m.client !== s.client && m.start < op.end && m.end > last!.start).flatMap((m) => m.ops), op],
    });
  }
  return out;
}
