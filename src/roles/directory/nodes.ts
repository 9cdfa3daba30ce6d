import type { Database } from "sql.js";
import type { NodeState, NodeStatus, Replica } from "../../protocol/directory.js";
import type { Peer } from "../../transport/actor.js";
import type { Logger } from "../../log.js";
import { prepared } from "./schema.js";

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
  ) {
    // Whoever was up before a restart gets a full dead-after period to reconnect.
    this.db.run("UPDATE nodes SET state='suspect', seen=? WHERE state != 'down'", [Date.now()]);
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
    this.run("UPDATE nodes SET state='up', seen=?, free=?, used=?, chunks=? WHERE id=?", [
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
    this.run("UPDATE nodes SET state='up', seen=?, free=?, used=?, chunks=? WHERE id=?", [
      Date.now(), figures.free, figures.used, figures.chunks, id,
    ]);
    return true;
  }

  /** Counts newly reported chunks at once, so status is current between heartbeats. */
  bump(id: string, chunks: { size: number }[]): void {
    const bytes = chunks.reduce((n, c) => n + c.size, 0);
    this.run("UPDATE nodes SET chunks = chunks + ?, used = used + ?, free = MAX(0, free - ?) WHERE id=?", [chunks.length, bytes, bytes, id]);
  }

  detach(peer: Peer): void {
    const id = this.byPeer.get(peer.id);
    if (!id) return;
    this.byPeer.delete(peer.id);
    if (this.live.get(id)?.peer !== peer) return;
    this.live.delete(id);
    this.db.run("UPDATE nodes SET state='suspect', seen=? WHERE id=?", [Date.now(), id]);
    this.log.warn("node link lost", { id });
  }

  peerOf(id: string): Peer | undefined {
    return this.live.get(id)?.peer;
  }

  /** Live storage nodes, for placement and reads. */
  upStorage(): { id: string; url: string; zone: string; free: number }[] {
    const st = prepared(this.db, "SELECT id, url, zone, free FROM nodes WHERE role='storage' AND state='up'");
    const out: { id: string; url: string; zone: string; free: number }[] = [];
    try {
      while (st.step()) {
        const [id, url, zone, free] = st.get();
        out.push({ id: String(id), url: String(url), zone: String(zone), free: Number(free) });
      }
    } finally {
      st.reset();
    }
    return out;
  }

  /** Replica locations of a chunk that are on live nodes. */
  liveReplicas(hash: string): Replica[] {
    const st = prepared(this.db, "SELECT n.id, n.url FROM replicas r JOIN nodes n ON n.id = r.node WHERE r.hash=? AND n.state='up'");
    const out: Replica[] = [];
    try {
      st.bind([hash]);
      while (st.step()) {
        const [id, url] = st.get();
        out.push({ node: String(id), url: String(url) });
      }
    } finally {
      st.reset();
    }
    return out;
  }

  lockUrl(): string | null {
    const res = this.db.exec("SELECT url FROM nodes WHERE role='lock' AND state='up' ORDER BY seen DESC LIMIT 1");
    const v = res[0]?.values[0]?.[0];
    return v === undefined ? null : String(v);
  }

  list(): NodeStatus[] {
    const res = this.db.exec("SELECT id, role, url, zone, state, capacity, free, used, chunks, seen FROM nodes ORDER BY role, id");
    return (res[0]?.values ?? []).map((r) => ({
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
    }));
  }

  close(): void {
    clearInterval(this.timer);
  }

  private run(sql: string, params: (string | number)[]): void {
    prepared(this.db, sql).run(params);
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
    const res = this.db.exec("SELECT id FROM nodes WHERE state='suspect' AND seen < ?", [now - this.deadAfterMs]);
    for (const [id] of res[0]?.values ?? []) {
      this.db.run("UPDATE nodes SET state='down' WHERE id=?", [id]);
      this.log.warn("node down", { id: String(id) });
      this.onDown(String(id));
    }
  }
}
