import { randomBytes } from "node:crypto";
import type { NodeStatus, Replica } from "../../../protocol/directory.js";
import type { PostgresBackend } from "../../../metadata/postgres.js";
import type { Tx } from "../../../metadata/tx.js";
import type { Peer } from "../../../transport/actor.js";
import type { Logger } from "../../../log.js";
import { nodeStatus } from "../nodes.js";
import type { Candidate } from "../placement.js";
import { allIn } from "./sql.js";

/** The database's clock in milliseconds, inside a statement: every directory process judges time by it. */
export const NOW_MS = "(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint)";

interface Link {
  peer: Peer;
  /** Marks the node's row while this connection carries it; another directory's link replaces it. */
  link: string;
  heard: number;
}

/**
 * Liveness when several directory processes share the database: a node keeps a link to one of them, which
 * writes its heartbeats (`seen`, on the database's clock) into the node's row. A node is up while those are
 * fresh and its link stands, suspect once its link fell or its heartbeats stopped, and down for every
 * directory once nothing was heard for `deadAfterMs`.
 */
export class PgNodes {
  private readonly links = new Map<string, Link>();
  private readonly byPeer = new Map<number, string>();
  private readonly timer: NodeJS.Timeout;
  /** SQL for a node row's state as of now; `n` is the row's alias. */
  readonly stateSql: (n: string) => string;

  constructor(
    private readonly db: PostgresBackend,
    private readonly log: Logger,
    private readonly init: { deadAfterMs: number; heartbeatMs: number },
  ) {
    const upWindow = Math.min(init.deadAfterMs, Math.max(3 * init.heartbeatMs, 2000));
    this.stateSql = (n) => `(CASE WHEN ${n}.seen < ${NOW_MS} - ${Math.floor(init.deadAfterMs)} THEN 'down'
      WHEN ${n}.state <> 'up' OR ${n}.seen < ${NOW_MS} - ${upWindow} THEN 'suspect' ELSE 'up' END)`;
    this.timer = setInterval(() => this.sweep(), Math.max(100, Math.min(1000, init.deadAfterMs / 4)));
    this.timer.unref();
  }

  /** Marks the node up on this connection, in the transaction that registers it. */
  async attach(tx: Tx, id: string, figures: { free: number; used: number; chunks: number }): Promise<string> {
    const link = randomBytes(8).toString("hex");
    await tx.run(`UPDATE nodes SET state='up', seen=${NOW_MS}, free=?, used=?, chunks=?, link=? WHERE id=?`, [
      figures.free, figures.used, figures.chunks, link, id,
    ]);
    return link;
  }

  /** After the registering transaction committed: this connection now carries the node. */
  linked(id: string, peer: Peer, link: string): void {
    const old = this.links.get(id);
    if (old && old.peer !== peer) {
      this.byPeer.delete(old.peer.id);
      old.peer.close();
    }
    this.links.set(id, { peer, link, heard: Date.now() });
    this.byPeer.set(peer.id, id);
    this.log.info("node up", { id, remote: peer.remote });
  }

  idOf(peer: Peer): string | undefined {
    return this.byPeer.get(peer.id);
  }

  /** The node's connection, when it is linked to this process. */
  peerOf(id: string): Peer | undefined {
    return this.links.get(id)?.peer;
  }

  heard(peer: Peer): void {
    const id = this.byPeer.get(peer.id);
    const l = id ? this.links.get(id) : undefined;
    if (l) l.heard = Date.now();
  }

  /** Records a heartbeat; false when the connection has not registered. */
  async heartbeat(peer: Peer, figures: { free: number; used: number; chunks: number }): Promise<boolean> {
    const id = this.byPeer.get(peer.id);
    const l = id ? this.links.get(id) : undefined;
    if (!id || !l) return false;
    l.heard = Date.now();
    await this.db.transact((tx) => tx.run(`UPDATE nodes SET state='up', seen=${NOW_MS}, free=?, used=?, chunks=? WHERE id=? AND link=?`, [
      figures.free, figures.used, figures.chunks, id, l.link,
    ]));
    return true;
  }

  detach(peer: Peer): void {
    const id = this.byPeer.get(peer.id);
    if (!id) return;
    this.byPeer.delete(peer.id);
    const l = this.links.get(id);
    if (l?.peer !== peer) return;
    this.links.delete(id);
    this.log.warn("node link lost", { id });
    // Only while no other directory took the node over: its link mark would differ then.
    this.db.transact((tx) => tx.run(`UPDATE nodes SET state='suspect', seen=${NOW_MS} WHERE id=? AND link=?`, [id, l.link]))
      .catch((err) => this.log.warn("could not record a lost link", { id, err }));
  }

  /** Live storage nodes, for placement. */
  async upStorage(tx: Tx): Promise<Candidate[]> {
    const rows = await tx.all(`SELECT id, url, zone, free FROM nodes n WHERE role='storage' AND ${this.stateSql("n")}='up'`);
    return rows.map(([id, url, zone, free]) => ({ id: String(id), url: String(url), zone: String(zone), free: Number(free) }));
  }

  /** Replica locations of each chunk that are on live nodes. */
  async liveReplicas(tx: Tx, hashes: string[]): Promise<Map<string, Replica[]>> {
    const out = new Map<string, Replica[]>(hashes.map((h) => [h, []]));
    const sql = `SELECT r.hash, n.id, n.url FROM replicas r JOIN nodes n ON n.id = r.node WHERE r.hash IN (*) AND ${this.stateSql("n")}='up'`;
    for (const [hash, id, url] of await allIn(tx, sql, hashes)) out.get(String(hash))!.push({ node: String(id), url: String(url) });
    return out;
  }

  /** Live nodes holding a chunk, with what trimming a surplus copy needs to choose. */
  async liveHolders(tx: Tx, hash: string): Promise<{ id: string; zone: string; free: number }[]> {
    const rows = await tx.all(`SELECT n.id, n.zone, n.free FROM replicas r JOIN nodes n ON n.id = r.node WHERE r.hash=? AND ${this.stateSql("n")}='up'`, [hash]);
    return rows.map(([id, zone, free]) => ({ id: String(id), zone: String(zone), free: Number(free) }));
  }

  async reconnecting(tx: Tx): Promise<number> {
    return Number((await tx.get(`SELECT COUNT(*) FROM nodes n WHERE role='storage' AND ${this.stateSql("n")}='suspect'`))?.[0] ?? 0);
  }

  /** One of the live lock services, chosen at random so that clients spread over them. */
  async lockUrl(tx: Tx): Promise<string | null> {
    const rows = await tx.all(`SELECT url FROM nodes n WHERE role='lock' AND ${this.stateSql("n")}='up'`);
    return rows.length ? String(rows[Math.floor(Math.random() * rows.length)]![0]) : null;
  }

  async list(tx: Tx): Promise<NodeStatus[]> {
    const rows = await tx.all(`SELECT id, role, url, zone, ${this.stateSql("n")}, capacity, free, used, chunks, seen FROM nodes n ORDER BY role, id`);
    return rows.map(nodeStatus);
  }

  close(): void {
    clearInterval(this.timer);
  }

  /** A node whose connection stands but which stopped talking (hung, partitioned) is as dead as one whose link fell. */
  private sweep(): void {
    const now = Date.now();
    for (const [id, l] of this.links) {
      if (now - l.heard > this.init.deadAfterMs) {
        this.log.warn("node silent, closing its link", { id });
        this.detach(l.peer);
        l.peer.close();
      }
    }
  }
}
