import { setImmediate as yieldNow } from "node:timers/promises";
import type { Logger } from "../../log.js";
import type { Collector } from "./gc.js";
import type { Generations } from "./gens.js";
import type { Namespace } from "./namespace.js";
import type { NodeTable } from "./nodes.js";
import { pickTargets } from "./placement.js";

/** Chunks asked of one node per copy request, so repair traffic comes in bounded slices. */
const BATCH = 32;
/** Chunks looked at per step of a scan: a step must stay far below 100 ms with a million chunks. */
const PAGE = 500;

export interface RepairComponents {
  log: Logger;
  nodes: NodeTable;
  ns: Namespace;
  gens: Generations;
  collector: Collector;
}

/**
 * Keeps every referenced chunk at the replication factor: a scan walks all chunks page by page between other
 * work, asks a live node that lacks an under-replicated chunk to copy it from one that has it (storage to
 * storage), and trims copies beyond the factor once every holder is up. The scan also yields the
 * under-replicated count that `status` shows.
 */
export class Repairer {
  private timer?: NodeJS.Timeout;
  private running = false;
  private again = false;
  private closed = false;
  private readonly periodic: NodeJS.Timeout;
  /** Result of the last complete scan. */
  underReplicated = 0;
  scannedAt: number | null = null;

  constructor(
    private readonly c: RepairComponents,
    private readonly init: { replicas: number; periodMs?: number },
  ) {
    // A scan now and then also catches repairs that failed or nodes that came back.
    this.periodic = setInterval(() => this.schedule(), init.periodMs ?? 30_000);
    this.periodic.unref();
  }

  nodeDown(id: string): void {
    this.c.log.info("node down, checking its chunks", { id });
    this.schedule();
  }

  nodeUp(_id: string): void {
    this.schedule();
  }

  chunkLost(_hash: string, _node: string): void {
    this.schedule();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    clearInterval(this.periodic);
  }

  /** Asks for a scan soon; one runs at a time, and a request during one runs another after it. */
  schedule(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), 200);
    this.timer.unref();
  }

  private async run(): Promise<void> {
    if (this.closed) return;
    this.running = true;
    try {
      await this.scan();
    } catch (err) {
      this.c.log.error("repair scan failed", { err });
    } finally {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    }
  }

  private async scan(): Promise<void> {
    const { nodes, ns } = this.c;
    const want = this.init.replicas;
    const work = new Map<string, { hash: string; from: string[] }[]>();
    const trim: { hash: string; node: string }[] = [];
    let under = 0;
    let cursor = "";
    for (;;) {
      const page = ns.replicaPage(cursor, PAGE);
      if (page.length === 0) break;
      const candidates = nodes.upStorage();
      for (const c of page) {
        if (c.up < want) under++;
        if (c.present < want) {
          const live = nodes.liveReplicas(c.hash);
          if (live.length === 0) continue; // Nothing to copy from; it may come back with its node.
          const targets = pickTargets(candidates, c.size, want - c.present, { existing: live.map((l) => l.node) });
          for (const t of targets) {
            const list = work.get(t.node) ?? [];
            if (list.length < BATCH) list.push({ hash: c.hash, from: live.map((l) => l.url) });
            else this.again = true;
            work.set(t.node, list);
          }
        } else if (c.up > want && c.up === c.present) {
          trim.push(...surplus(nodes, c.hash, c.up - want));
        }
      }
      cursor = page[page.length - 1]!.hash;
      await yieldNow();
      if (this.closed) return;
    }
    this.underReplicated = under;
    this.scannedAt = Date.now();
    if (trim.length) {
      this.c.log.info("trimming copies beyond the replication factor", { replicas: trim.length });
      this.c.collector.drop([], trim, "over-replicated");
    }
    if (work.size === 0) return;
    const gen = this.c.gens.take();
    await this.c.gens.whenDurable();
    let copied = 0;
    await Promise.all([...work].map(async ([node, chunks]) => {
      const peer = nodes.peerOf(node);
      if (!peer) return;
      this.c.log.info("repair copy", { target: node, chunks: chunks.length });
      try {
        copied += (await peer.request<{ copied: number }>("store.copy", { gen, chunks }, { timeoutMs: 120_000 })).copied;
      } catch (err) {
        this.c.log.warn("repair copy failed", { target: node, err });
      }
    }));
    // New copies change what the next scan finds; failed ones wait for the periodic scan rather than spin.
    if (copied > 0) this.again = true;
  }
}

/** Which copies of a chunk to drop: from the zones holding the most copies, the nodes with the least room first. */
function surplus(nodes: NodeTable, hash: string, extra: number): { hash: string; node: string }[] {
  const holders = nodes.liveHolders(hash);
  const perZone = new Map<string, number>();
  for (const h of holders) perZone.set(h.zone, (perZone.get(h.zone) ?? 0) + 1);
  holders.sort((a, b) => perZone.get(b.zone)! - perZone.get(a.zone)! || a.free - b.free);
  const out: { hash: string; node: string }[] = [];
  for (const h of holders) {
    if (out.length >= extra) break;
    out.push({ hash, node: h.id });
    perZone.set(h.zone, perZone.get(h.zone)! - 1);
  }
  return out;
}
