import { performance } from "node:perf_hooks";
import { contentBytes, sha256, type Content } from "./content.js";
import type { DriverCall, DriverReply, LeaseState } from "./driver.js";

/**
 * Error codes that guarantee the call changed nothing. Every other failure (UNAVAILABLE, TIMEOUT, BUSY,
 * INTERNAL, a client that died...) is indeterminate: the change may or may not have happened.
 */
export const DEFINITE = new Set(["LOCKED", "STALE_TOKEN", "CONFLICT", "NOT_FOUND", "EXISTS", "BAD_REQUEST", "NOT_ENOUGH_NODES", "FORBIDDEN", "NO_SPACE"]);

export type Status = "pending" | "ok" | "fail" | "indet" | "hung";

/** What the workload says about a call beyond the request itself. */
export interface OpFields {
  /** Transaction the call belongs to. */
  txn?: number;
  /** Lock section (lock .. unlock by one client) the call belongs to. */
  section?: number;
  /** The post-heal call that shows a client can work again. */
  probe?: boolean;
}

/** One client call: its request, when it ran (ms since the run began) and how it ended. */
export interface Op extends OpFields {
  id: number;
  client: string;
  op: DriverCall["op"];
  path?: string;
  from?: string;
  to?: string;
  /** Content id of a write. */
  content?: string;
  start: number;
  /** Infinity while pending, and for ever when hung. */
  end: number;
  status: Status;
  code?: string;
  message?: string;
  result?: Record<string, unknown>;
  lease?: LeaseState;
}

export interface LeaseLoss {
  client: string;
  path: string;
  token: number;
  at: number;
}

export interface FaultEvent {
  at: number;
  action: "kill" | "restart" | "restart-failed";
  target: string;
  detail?: string;
}

export interface ClientExit {
  client: string;
  at: number;
  code: number | null;
  stderr: string;
}

/** Everything that happened in a run, in the order it happened: the checker's only input. */
export class Ledger {
  private readonly t0 = performance.now();
  readonly ops: Op[] = [];
  readonly losses: LeaseLoss[] = [];
  readonly faults: FaultEvent[] = [];
  readonly exits: ClientExit[] = [];
  /** content id -> SHA-256 of its bytes, and back. */
  private readonly shaOf = new Map<string, string>();
  private readonly idOfSha = new Map<string, string>();

  /** @param log where kills and restarts are told as they happen */
  constructor(private readonly log: (line: string) => void = () => {}) {}

  now(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  /** Remembers a content's hash, so that reads can name what they saw. */
  content(c: Content): Content {
    if (!this.shaOf.has(c.id)) {
      const h = sha256(contentBytes(c));
      this.shaOf.set(c.id, h);
      this.idOfSha.set(h, c.id);
    }
    return c;
  }

  /** The content id whose bytes hash to `sha`, if any write stored it. */
  contentOf(sha: string): string | undefined {
    return this.idOfSha.get(sha);
  }

  begin(client: string, req: DriverCall, fields: OpFields): Op {
    const r = req as Record<string, unknown>;
    const op: Op = {
      id: this.ops.length + 1, client, op: req.op, start: this.now(), end: Infinity, status: "pending", ...fields,
      ...(typeof r.path === "string" ? { path: r.path } : {}),
      ...(typeof r.from === "string" ? { from: r.from, to: r.to as string } : {}),
      ...(r.content ? { content: (r.content as Content).id } : {}),
    };
    this.ops.push(op);
    return op;
  }

  end(op: Op, reply: DriverReply): void {
    op.end = this.now();
    if (reply.lease) op.lease = reply.lease;
    if (reply.ok) {
      op.status = "ok";
      op.result = reply.result;
    } else {
      op.status = DEFINITE.has(reply.code) ? "fail" : "indet";
      op.code = reply.code;
      op.message = reply.message;
    }
  }

  hung(op: Op): void {
    op.status = "hung";
  }

  leaseLost(client: string, path: string, token: number): void {
    this.losses.push({ client, path, token, at: this.now() });
  }

  fault(action: FaultEvent["action"], target: string, detail?: string): void {
    const f: FaultEvent = { at: this.now(), action, target, ...(detail ? { detail } : {}) };
    this.faults.push(f);
    this.log(faultLine(f));
  }

  clientExited(client: string, code: number | null, stderr: string): void {
    this.exits.push({ client, at: this.now(), code, stderr: stderr.slice(-2000) });
  }

  counts(): { tried: number; acknowledged: number; failed: number; indeterminate: number; hung: number } {
    const n = (s: Status) => this.ops.filter((o) => o.status === s).length;
    return { tried: this.ops.length, acknowledged: n("ok"), failed: n("fail"), indeterminate: n("indet"), hung: n("hung") };
  }
}

/** One ledger line as printed in reports: an op with its times in seconds. */
export function opLine(op: Op): string {
  const { result, ...rest } = op;
  const shown: Record<string, unknown> = { ...rest, start: (op.start / 1000).toFixed(3), end: Number.isFinite(op.end) ? (op.end / 1000).toFixed(3) : "never" };
  if (result) shown.result = result.status ? "(status)" : result;
  return JSON.stringify(shown);
}

export function faultLine(f: FaultEvent): string {
  return `${(f.at / 1000).toFixed(3)}s ${f.action} ${f.target}${f.detail ? ` ${f.detail.split("\n")[0]}` : ""}`;
}
