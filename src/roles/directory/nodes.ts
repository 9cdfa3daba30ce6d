import type { Database } from "sql.js";
import type { NodeState, NodeStatus, Replica } from "../../protocol/directory.js";
import type { Peer } from "../../transport/actor.js";
import type { Logger } from "../../log.js";
import { all, get, run, type Row } from "./sql.js";

interface Live {
  peer: Peer;
  heard: number;
}

/**
 * Who is alive, judged by each node's link: up while its connection stands and heartbeats arrive,
 * suspect once the link is gone, down after `deadAfterMs` without it. Figures live in the `nodes` table.
 */
export class NodeTable {
  private readonly live = new Map<string, Live>();
  private readonly byPeer = new Map<number, string>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly db: Database,
    private readonly deadAfterMs: number,
    private readonly log: Logger,
    private readonly onDown: (id: string) => void,
    private readonly onLinkLost: (id: string) => void = () => {},
  ) {
    // Every node gets a full dead-after period to reconnect after a restart: states are live figures, not
    // journaled, so a database rebuilt from its journals cannot tell who was up (all read 'down').
    run(this.db, "UPDATE nodes SET state='suspect', seen=?", [Date.now()]);
    this.timer = setInterval(() => this.sweep(), Math.max(100, Math.min(1000, deadAfterMs / 4)));
    this.timer.unref();
  }

  attach(id: string, peer: Peer, figures: { free: number; used: number; chunks: number }): void {
    const old = this.live.get(id);
    if (old && old.peer !== peer) {
      this.byPeer.delete(old.peer.id);
      // The same node id on a new connection: the old one is stale (e.g. a restarted process).
      old.peer.close();
    }
    this.live.set(id, { peer, heard: Date.now() });
    this.byPeer.set(peer.id, id);
    run(this.db, "UPDATE nodes SET state='up', seen=?, free=?, used=?, chunks=? WHERE id=?", [
      Date.now(), figures.free, figures.used, figures.chunks, id,
    ]);
    this.log.info("node up", { id, remote: peer.remote });
  }

  /** The node id registered on this connection, if any. */
  idOf(peer: Peer): string | undefined {
    return this.byPeer.get(peer.id);
  }

  heartbeat(peer: Peer, figures: { free: number; used: number; chunks: number }): boolean {
    const id = this.byPeer.get(peer.id);
    if (!id) return false;
    const l = this.live.get(id);
    if (l) l.heard = Date.now();
    run(this.db, "UPDATE nodes SET state='up', seen=?, free=?, used=?, chunks=? WHERE id=?", [
      Date.now(), figures.free, figures.used, figures.chunks, id,
    ]);
    return true;
  }

  /** Any message from a registered node shows it alive (a long chunk report sends no heartbeats). */
  heard(peer: Peer): void {
    const id = this.byPeer.get(peer.id);
    const l = id ? this.live.get(id) : undefined;
    if (l) l.heard = Date.now();
  }

  /** Counts newly reported chunks at once, so status is current between heartbeats. */
  bump(id: string, chunks: { size: number }[]): void {
    const bytes = chunks.reduce((n, c) => n + c.size, 0);
    run(this.db, "UPDATE nodes SET chunks = chunks + ?, used = used + ?, free = MAX(0, free - ?) WHERE id=?", [chunks.length, bytes, bytes, id]);
  }

  detach(peer: Peer): void {
    const id = this.byPeer.get(peer.id);
    if (!id) return;
    this.byPeer.delete(peer.id);
    if (this.live.get(id)?.peer !== peer) return;
    this.live.delete(id);
    run(this.db, "UPDATE nodes SET state='suspect', seen=? WHERE id=?", [Date.now(), id]);
    this.log.warn("node link lost", { id });
    this.onLinkLost(id);
  }

  peerOf(id: string): Peer | undefined {
    return this.live.get(id)?.peer;
  }

  /** Live storage nodes, for placement and reads. */
  upStorage(): { id: string; url: string; zone: string; free: number }[] {
    return all(this.db, "SELECT id, url, zone, free FROM nodes WHERE role='storage' AND state='up'").map(([id, url, zone, free]) => ({
      id: String(id), url: String(url), zone: String(zone), free: Number(free),
    }));
  }

  /** Replica locations of a chunk that are on live nodes. */
  liveReplicas(hash: string): Replica[] {
    return all(this.db, "SELECT n.id, n.url FROM replicas r JOIN nodes n ON n.id = r.node WHERE r.hash=? AND n.state='up'", [hash])
      .map(([id, url]) => ({ node: String(id), url: String(url) }));
  }

  /** Storage nodes whose link is down but that are not yet declared down: they may be back any moment. */
  reconnecting(): number {
    return Number(get(this.db, "SELECT COUNT(*) FROM nodes WHERE role='storage' AND state='suspect'")?.[0] ?? 0);
  }

  /** Live nodes holding a chunk, with what trimming a surplus copy needs to choose. */
  liveHolders(hash: string): { id: string; zone: string; free: number }[] {
    return all(this.db, "SELECT n.id, n.zone, n.free FROM replicas r JOIN nodes n ON n.id = r.node WHERE r.hash=? AND n.state='up'", [hash])
      .map(([id, zone, free]) => ({ id: String(id), zone: String(zone), free: Number(free) }));
  }

  /** One of the live lock services, at random: clients spread over them, as each asks on its own. */
  lockUrl(): string | null {
    const urls = all(this.db, "SELECT url FROM nodes WHERE role='lock' AND state='up'").map((r) => String(r[0]));
    return urls.length === 0 ? null : urls[Math.floor(Math.random() * urls.length)]!;
  }

  list(): NodeStatus[] {
    return all(this.db, "SELECT id, role, url, zone, state, capacity, free, used, chunks, seen FROM nodes ORDER BY role, id").map(nodeStatus);
  }

  close(): void {
    clearInterval(this.timer);
  }

  private sweep(): void {
    const now = Date.now();
    // A node whose connection stands but which stopped talking (hung, partitioned) is as dead as one whose link fell.
    for (const [id, l] of this.live) {
      if (now - l.heard > this.deadAfterMs) {
        this.log.warn("node silent, closing its link", { id });
        this.detach(l.peer);
        l.peer.close();
      }
    }
    for (const [id] of all(this.db, "SELECT id FROM nodes WHERE state='suspect' AND seen < ?", [now - this.deadAfterMs])) {
      run(this.db, "UPDATE nodes SET state='down' WHERE id=?", [String(id)]);
      this.log.warn("node down", { id: String(id) });
      this.onDown(String(id));
    }
  }
}

/** A node as status shows it, from a row of id, role, url, zone, state, capacity, free, used, chunks, seen. */
export function nodeStatus(r: Row): NodeStatus {
  return {
    id: String(r[0]),
    role: String(r[1]) as NodeStatus["role"],
    url: String(r[2]),
    zone: String(r[3]),
    state: String(r[4]) as NodeState,
    capacity: r[5] === null ? null : Number(r[5]),
    free: Number(r[6]),
    used: Number(r[7]),
    chunks: Number(r[8]),
    lastSeen: new Date(Number(r[9])).toISOString(),
  };
}
