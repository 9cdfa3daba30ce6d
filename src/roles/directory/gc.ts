import type { Database } from "sql.js";
import type { Logger } from "../../log.js";
import type { NodeTable } from "./nodes.js";
import type { DirRecord } from "./schema.js";
import { all } from "./sql.js";

export interface GcInit {
  /** How long a chunk must stay unreferenced before it is deleted: uploads in progress own chunks no file names yet. */
  graceMs: number;
  intervalMs?: number;
}

/**
 * Deletes chunks that no file version references any more (after rm, mv over, or a rewrite), once they
 * have stayed unreferenced for the grace period: first from the directory, then from the storage nodes.
 */
export class Collector {
  /** hash -> when a sweep first saw it unreferenced; kept in memory, so a restart only delays collection. */
  private readonly seen = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly components: { log: Logger; db: Database; nodes: NodeTable; commit: (rec: DirRecord) => Promise<void> },
    private readonly init: GcInit,
  ) {
    this.timer = setInterval(() => void this.sweep(), init.intervalMs ?? Math.max(1000, Math.min(60_000, init.graceMs / 2)));
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  async sweep(): Promise<void> {
    const { db, nodes, log } = this.components;
    const now = Date.now();
    const unreferenced = new Set(all(db, "SELECT hash FROM chunks WHERE refs=0 LIMIT 10000").map(([h]) => String(h)));
    for (const h of this.seen.keys()) if (!unreferenced.has(h)) this.seen.delete(h);
    const due: string[] = [];
    for (const h of unreferenced) {
      const since = this.seen.get(h);
      if (since === undefined) this.seen.set(h, now);
      else if (now - since >= this.init.graceMs) due.push(h);
    }
    if (due.length === 0) return;
    // Who holds them is read before the record drops their replica rows.
    const holders = new Map<string, string[]>();
    for (const h of due) {
      for (const [node] of all(db, "SELECT node FROM replicas WHERE hash=?", [h])) {
        const list = holders.get(String(node));
        if (list) list.push(h);
        else holders.set(String(node), [h]);
      }
    }
    await this.components.commit({ op: "gc", hashes: due });
    for (const h of due) this.seen.delete(h);
    log.info("collected unreferenced chunks", { chunks: due.length });
    for (const [node, hashes] of holders) {
      // A node that is down now keeps them; its next chunk report leaves them unknown here and harmless.
      void nodes.peerOf(node)?.request("store.delete", { hashes }, { timeoutMs: 60_000 }).catch((err: Error) =>
        log.warn("chunk delete failed", { node, err: err.message }),
      );
    }
  }
}
