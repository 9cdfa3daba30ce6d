import { DfsError } from "../../protocol/errors.js";
import type { Replica } from "../../protocol/directory.js";

export interface Candidate {
  id: string;
  url: string;
  zone: string;
  free: number;
}

/** Room a node keeps beyond a chunk, so that it is never filled to the last byte. */
const HEADROOM = 1024 * 1024;

/**
 * Picks `want` distinct nodes for a chunk of `size` bytes among the live `nodes`: never a node without room,
 * nor one that already holds the chunk or is excluded; other zones than the existing replicas' where
 * possible, otherwise weighted by free space so data spreads evenly.
 */
export function pickTargets(
  nodes: Candidate[],
  size: number,
  want: number,
  opts: { existing: string[]; exclude?: string[] },
): Replica[] {
  const taken = new Set([...opts.existing, ...(opts.exclude ?? [])]);
  const zones = new Set(nodes.filter((n) => opts.existing.includes(n.id)).map((n) => n.zone));
  let pool = nodes.filter((c) => !taken.has(c.id) && c.free >= size + HEADROOM);
  const chosen: Replica[] = [];
  while (chosen.length < want && pool.length > 0) {
    const fresh = pool.filter((c) => !zones.has(c.zone));
    const from = fresh.length > 0 ? fresh : pool;
    const pick = weighted(from);
    chosen.push({ node: pick.id, url: pick.url });
    zones.add(pick.zone);
    pool = pool.filter((c) => c.id !== pick.id);
  }
  return chosen;
}

function weighted(nodes: Candidate[]): Candidate {
  const total = nodes.reduce((s, n) => s + Math.max(1, n.free), 0);
  let r = Math.random() * total;
  for (const n of nodes) {
    r -= Math.max(1, n.free);
    if (r <= 0) return n;
  }
  return nodes[nodes.length - 1]!;
}

export function notEnoughNodes(have: number, need: number, reconnecting = 0): DfsError {
  const back = reconnecting > 0
    ? ` (${reconnecting} more lost their link less than --dead-after ago, or are reconnecting to a restarted directory, and may be back shortly)`
    : "";
  return new DfsError(
    "NOT_ENOUGH_NODES",
    `only ${have} live storage node${have === 1 ? "" : "s"} with room, ${need} needed for the replication factor${back}; start more storage nodes or free space`,
    { details: { have, need, reconnecting } },
  );
}
