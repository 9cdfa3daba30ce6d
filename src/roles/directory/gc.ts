import type { Database } from "sql.js";
import type { DeleteReply } from "../../protocol/storage.js";
import type { Logger } from "../../log.js";
import type { Generations } from "./gens.js";
import type { NodeTable } from "./nodes.js";
import type { DirRecord } from "./schema.js";
import { all, get } from "./sql.js";

export interface GcInit {
  /** How long a chunk must stay unused (no file, no placement, no upload) before it is deleted. */
  graceMs: number;
  intervalMs?: number;
}

export interface GcComponents {
  log: Logger;
  db: Database;
  nodes: NodeTable;
  gens: Generations;
  commit: (rec: DirRecord) => { durable: Promise<void> };
}

/** Chunks looked at per sweep, so that one sweep stays a short step of the event loop. */
const SWEEP_LIMIT = 2000;
/** Leftovers remembered per node; more wait for the node's next full report. */
const LEFTOVERS_PER_NODE = 100_000;

/**
 * Deletes what nothing needs: chunks no file references (after rm, mv over, or a rewrite) and chunks a storage
 * node holds that the directory never knew (an upload whose commit never came, deletes a node missed while it
 * was down), each once it has stayed so for the grace period. A delete is ordered at a generation and leaves a
 * tombstone: a node keeps any chunk stored under a newer placement, and a report of a chunk stored under an
 * older one is refused, so a delete can never remove what a placement, upload or commit made after it uses.
 */
export class Collector {
  /** Chunk copies the storage nodes confirmed deleted since start, for the metrics. */
  deleted = 0;
  /** hash -> when a sweep first saw it unreferenced; in memory, so a restart only delays collection. */
  private readonly seen = new Map<string, number>();
  /** hash -> last time a placement, upload or dereference touched it. */
  private readonly active = new Map<string, number>();
  /** node -> hash -> when its report first showed a chunk the directory does not know. */
  private readonly leftoverSeen = new Map<string, Map<string, number>>();
  private readonly timer: NodeJS.Timeout;
  private readonly tombstoneAgeMs: number;

  constructor(private readonly c: GcComponents, private readonly init: GcInit) {
    this.tombstoneAgeMs = Math.max(3_600_000, 2 * init.graceMs);
    this.timer = setInterval(() => this.sweep(), init.intervalMs ?? Math.max(500, Math.min(60_000, init.graceMs / 2)));
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** Marks chunks as in use now (placed, stored, or just dereferenced): their grace period starts again. */
  touch(hashes: Iterable<string>): void {
    const now = Date.now();
    for (const h of hashes) this.active.set(h, now);
  }

  /** Chunks a node reported that no file or upload names. */
  leftovers(node: string, hashes: string[]): void {
    if (hashes.length === 0) return;
    let m = this.leftoverSeen.get(node);
    if (!m) this.leftoverSeen.set(node, (m = new Map()));
    const now = Date.now();
    for (const h of hashes) if (!m.has(h) && m.size < LEFTOVERS_PER_NODE) m.set(h, now);
  }

  /**
   * Orders the deletion of chunk replicas in one journaled step: the replicas leave the directory and get
   * tombstones now, the named chunks too if still unreferenced; the storage nodes are told once it is on disk.
   */
  drop(chunks: string[], replicas: { hash: string; node: string }[], why: string): void {
    if (replicas.length === 0 && chunks.length === 0) return;
    const gen = this.c.gens.take();
    const { durable } = this.c.commit({ op: "drop", gen, at: Date.now(), chunks, replicas });
    const byNode = new Map<string, string[]>();
    for (const r of replicas) {
      const list = byNode.get(r.node);
      if (list) list.push(r.hash);
      else byNode.set(r.node, [r.hash]);
    }
    void Promise.all([durable, this.c.gens.whenDurable()]).then(() => this.send(byNode, gen, why), (err) =>
      this.c.log.error("delete order not journaled", { err }));
  }

  private async send(byNode: Map<string, string[]>, gen: number, why: string): Promise<void> {
    await Promise.all([...byNode].map(async ([node, hashes]) => {
      // A node that is down keeps them; its next report shows them as leftovers, collected then.
      const peer = this.c.nodes.peerOf(node);
      if (!peer) return;
      try {
        const r = await peer.request<DeleteReply>("store.delete", { hashes, gen }, { timeoutMs: 60_000 });
        this.deleted += r.deleted.length;
        this.c.log.info("chunks deleted", { node, why, deleted: r.deleted.length, kept: r.kept.length });
      } catch (err) {
        this.c.log.warn("chunk delete failed", { node, err });
      }
    }));
  }

  /** One bounded pass: due unreferenced chunks, due leftovers, old tombstones. Synchronous, so it is one step. */
  sweep(): void {
    const { db } = this.c;
    const now = Date.now();
    for (const [h, at] of this.active) if (now - at > this.init.graceMs) this.active.delete(h);
    const unreferenced = new Set(all(db, "SELECT hash FROM chunks WHERE refs=0 LIMIT ?", [SWEEP_LIMIT]).map(([h]) => String(h)));
    for (const h of this.seen.keys()) if (!unreferenced.has(h)) this.seen.delete(h);
    const chunks: string[] = [];
    const replicas: { hash: string; node: string }[] = [];
    for (const h of unreferenced) {
      if (!this.seen.has(h)) this.seen.set(h, now);
      const since = Math.max(this.seen.get(h)!, this.active.get(h) ?? 0);
      if (now - since < this.init.graceMs) continue;
      chunks.push(h);
      this.seen.delete(h);
      for (const [node] of all(db, "SELECT node FROM replicas WHERE hash=?", [h])) replicas.push({ hash: h, node: String(node) });
    }
    let budget = SWEEP_LIMIT;
    for (const [node, m] of this.leftoverSeen) {
      if (!this.c.nodes.peerOf(node)) continue;
      for (const [h, at] of m) {
        if (budget <= 0) break;
        if (now - Math.max(at, this.active.get(h) ?? 0) < this.init.graceMs) continue;
        m.delete(h);
        budget--;
        // Known by now (its upload was committed or reported late): not a leftover after all.
        if (get(db, "SELECT 1 FROM chunks WHERE hash=?", [h]) === undefined) replicas.push({ hash: h, node });
      }
      if (m.size === 0) this.leftoverSeen.delete(node);
    }
    if (chunks.length || replicas.length) {
      this.c.log.info("collecting", { unreferenced: chunks.length, replicas: replicas.length });
      this.drop(chunks, replicas, "unused");
    }
    const before = now - this.tombstoneAgeMs;
    if (get(db, "SELECT 1 FROM tombstones WHERE at < ? LIMIT 1", [before])) this.c.commit({ op: "prune", before });
  }
}
