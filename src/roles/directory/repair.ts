import { setImmediate as yieldNow } from "node:timers/promises";
import type { Replica } from "../../protocol/directory.js";
import type { Logger } from "../../log.js";
import type { Awaitable } from "./core.js";
import { pickTargets, type Candidate } from "./placement.js";

/** Chunks asked of one node per copy request, so repair traffic comes in bounded slices. */
const BATCH = 32;
/** Chunks looked at per step of a scan: a step must stay far below 100 ms with a million chunks. */
const PAGE = 500;

/** What a repair scan reads and whom it orders, from either metadata back end. */
export interface RepairSource {
  /** False while another directory process runs background work: scans are skipped then. */
  leading(): boolean;
  /** See Namespace.replicaPage. */
  replicaPage(cursor: string, limit: number): Awaitable<{ hash: string; size: number; up: number; present: number }[]>;
  upStorage(): Awaitable<Candidate[]>;
  liveReplicas(hash: string): Awaitable<Replica[]>;
  /** Live nodes holding a chunk, with what trimming a surplus copy needs to choose. */
  liveHolders(hash: string): Awaitable<{ id: string; zone: string; free: number }[]>;
  /** A generation for copy orders, usable once it resolves. */
  takeGen(): Promise<number>;
  /** Asks a storage node to copy chunks; fails when it cannot be reached. */
  copy(node: string, body: { gen: number; chunks: { hash: string; from: string[] }[] }): Promise<{ copied: number }>;
  /** Orders copies beyond the replication factor deleted. */
  drop(replicas: { hash: string; node: string }[], why: string): void;
  /** The result of a complete scan, for status. */
  scanned(under: number, at: number): void;
}

export interface RepairComponents {
  log: Logger;
  source: RepairSource;
}

/**
 * Keeps every referenced chunk at the replication factor: a scan walks all chunks page by page between other
 * work, asks a live node that lacks an under-replicated chunk to copy it from one that has it (storage to
 * storage), and trims copies beyond the factor once every holder is up. The scan also yields the
 * under-replicated count that `status` shows.
 */
export class Repairer {
  /** Chunk copies made since start, for the metrics. */
  copies = 0;
  private timer?: NodeJS.Timeout;
  private running = false;
  private again = false;
  private closed = false;
  private readonly periodic: NodeJS.Timeout;

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
    if (this.closed || !this.c.source.leading()) return;
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
    const src = this.c.source;
    const want = this.init.replicas;
    const work = new Map<string, { hash: string; from: string[] }[]>();
    const trim: { hash: string; node: string }[] = [];
    let under = 0;
    let cursor = "";
    for (;;) {
      const page = await src.replicaPage(cursor, PAGE);
      if (page.length === 0) break;
      const candidates = await src.upStorage();
      for (const c of page) {
        if (c.up < want) under++;
        if (c.present < want) {
          const live = await src.liveReplicas(c.hash);
          if (live.length === 0) continue; // Nothing to copy from; it may come back with its node.
          const targets = pickTargets(candidates, c.size, want - c.present, { existing: live.map((l) => l.node) });
          for (const t of targets) {
            const list = work.get(t.node) ?? [];
            if (list.length < BATCH) list.push({ hash: c.hash, from: live.map((l) => l.url) });
            else this.again = true;
            work.set(t.node, list);
          }
        } else if (c.up > want && c.up === c.present) {
          trim.push(...surplus(c.hash, await src.liveHolders(c.hash), c.up - want));
        }
      }
      cursor = page[page.length - 1]!.hash;
      await yieldNow();
      if (this.closed || !src.leading()) return;
    }
    src.scanned(under, Date.now());
    if (trim.length) {
      this.c.log.info("trimming copies beyond the replication factor", { replicas: trim.length });
      src.drop(trim, "over-replicated");
    }
    if (work.size === 0) return;
    const gen = await src.takeGen();
    let copied = 0;
    await Promise.all([...work].map(async ([node, chunks]) => {
      this.c.log.info("repair copy", { target: node, chunks: chunks.length });
      try {
        const n = (await src.copy(node, { gen, chunks })).copied;
        copied += n;
        this.copies += n;
      } catch (err) {
        this.c.log.warn("repair copy failed", { target: node, err });
      }
    }));
    // New copies change what the next scan finds; failed ones wait for the periodic scan rather than spin.
    if (copied > 0) this.again = true;
  }
}

/** Which copies of a chunk to drop: from the zones holding the most copies, the nodes with the least room first. */
function surplus(hash: string, holders: { id: string; zone: string; free: number }[], extra: number): { hash: string; node: string }[] {
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
