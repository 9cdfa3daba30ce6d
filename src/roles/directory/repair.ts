import type { Logger } from "../../log.js";
import type { Namespace } from "./namespace.js";
import type { NodeTable } from "./nodes.js";
import { pickTargets } from "./placement.js";

/** Chunks asked of one node per copy request, so repair traffic comes in bounded slices. */
const BATCH = 32;

/**
 * Re-replicates chunks that fell under the replication factor: asks a live node that lacks a chunk to
 * copy it from a node that has it (storage to storage). One request per target node at a time.
 */
export class Repairer {
  private nodes?: NodeTable;
  private ns?: Namespace;
  private timer?: NodeJS.Timeout;
  private running = false;
  private again = false;
  private closed = false;
  private readonly periodic: NodeJS.Timeout;

  constructor(
    private readonly components: { log: Logger },
    private readonly init: { replicas: number; periodMs?: number },
  ) {
    // A sweep now and then also catches repairs that failed or nodes that came back.
    this.periodic = setInterval(() => this.schedule(), init.periodMs ?? 30_000);
    this.periodic.unref();
  }

  bind(nodes: NodeTable, ns: Namespace): void {
    this.nodes = nodes;
    this.ns = ns;
  }

  nodeDown(id: string): void {
    this.components.log.info("node down, checking its chunks", { id });
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

  private schedule(): void {
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
    const { nodes, ns } = this;
    if (!nodes || !ns || this.closed) return;
    this.running = true;
    try {
      const work = new Map<string, { hash: string; from: string[] }[]>();
      const candidates = nodes.upStorage();
      for (const c of ns.underReplicatedAll(this.init.replicas)) {
        const live = nodes.liveReplicas(c.hash);
        if (live.length === 0) continue; // Nothing to copy from; it may come back with its node.
        const targets = pickTargets(candidates, c.size, this.init.replicas - c.present, { existing: live.map((l) => l.node) });
        for (const t of targets) {
          const list = work.get(t.node) ?? [];
          if (list.length < BATCH) list.push({ hash: c.hash, from: live.map((l) => l.url) });
          work.set(t.node, list);
        }
      }
      await Promise.all([...work].map(async ([node, chunks]) => {
        const peer = nodes.peerOf(node);
        if (!peer) return;
        this.components.log.info("repair copy", { target: node, chunks: chunks.length });
        try {
          await peer.request("store.copy", { chunks }, { timeoutMs: 120_000 });
        } catch (err) {
          this.components.log.warn("repair copy failed", { target: node, err });
        }
      }));
      if ([...work.values()].some((l) => l.length >= BATCH)) this.again = true;
    } finally {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    }
  }
}
