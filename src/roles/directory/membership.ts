import type { Database } from "sql.js";
import type { RegisterBody, RegisterReply, ReportBody, ReportReply } from "../../protocol/directory.js";
import type { VerifyReply } from "../../protocol/storage.js";
import type { Peer } from "../../transport/actor.js";
import type { Logger } from "../../log.js";
import type { Collector } from "./gc.js";
import type { Generations } from "./gens.js";
import type { Leases } from "./leases.js";
import type { NodeTable } from "./nodes.js";
import type { Repairer } from "./repair.js";
import { Reports } from "./reports.js";
import { checkRegistration, confirmedBad } from "./rules.js";
import { metaText, type DirRecord } from "./schema.js";
import { all, get, run } from "./sql.js";

export interface MembershipComponents {
  log: Logger;
  db: Database;
  commit: (rec: DirRecord) => { durable: Promise<void> };
  nodes: NodeTable;
  gens: Generations;
  leases: Leases;
  repairer: Repairer;
  collector: Collector;
}

/**
 * Who may join and as whom: registration of storage and lock nodes, bound to the certificate and data folder
 * that first used a node id and to the cluster id; storage nodes' chunk reports, page by page.
 */
export class Membership {
  private readonly reporting = new Reports();
  private nextReport: number;

  constructor(private readonly c: MembershipComponents, private readonly init: { replicas: number; heartbeatMs: number }) {
    // Report numbers mark replica rows; they must exceed every mark left in the table by an earlier process.
    this.nextReport = Number(get(c.db, "SELECT COALESCE(MAX(mark), 0) FROM replicas")?.[0] ?? 0) + 1;
  }

  get clusterId(): string {
    return metaText(this.c.db, "cluster")!;
  }

  register(b: RegisterBody, peer: Peer): Promise<RegisterReply> {
    const { db, nodes } = this.c;
    const known = get(db, "SELECT cert, secret, role FROM nodes WHERE id=?", [b.id]);
    const [cert, kept, role] = (known ?? []).map((v) => (v === null ? undefined : String(v)));
    const secret = checkRegistration(b, peer, this.clusterId, known ? { cert, secret: kept, role: role! } : undefined);
    const { durable } = this.c.commit({ op: "node", id: b.id, role: b.kind, url: b.url, zone: b.zone, capacity: b.capacity, cert: peer.name, secret });
    nodes.attach(b.id, peer, { free: b.free, used: b.used, chunks: b.chunks });
    let report = 0;
    if (b.kind === "storage") {
      report = this.nextReport++;
      this.reporting.start(b.id, report, peer);
      this.c.repairer.nodeUp(b.id);
    }
    const reply: RegisterReply = {
      accepted: true, replicas: this.init.replicas, heartbeatMs: this.init.heartbeatMs, clusterId: this.clusterId,
      gen: this.c.gens.current, report, leases: b.kind === "lock" ? this.c.leases.live() : [],
    };
    // A node that acts on the reply (a storage node keeps `gen` as its floor) must find it durable.
    return Promise.all([durable, this.c.gens.whenDurable()]).then(() => reply);
  }

  /**
   * One page of a storage node's chunk list: known chunks are (re)confirmed as replicas on the node, unknown
   * ones are handed to the collector as leftovers; the last page drops the replicas the node no longer reported.
   */
  report(b: ReportBody, peer: Peer): Promise<ReportReply> {
    const { db, nodes } = this.c;
    const node = this.reporting.check(nodes.idOf(peer), peer, b.report);
    nodes.heard(peer);
    const add: { hash: string; size: number }[] = [];
    const unknown: string[] = [];
    const buf = Buffer.from(b.hashes.buffer, b.hashes.byteOffset, b.hashes.byteLength);
    for (let off = 0; off < buf.length; off += 32) {
      const hash = buf.toString("hex", off, off + 32);
      const chunk = get(db, "SELECT size, (SELECT mark FROM replicas WHERE hash=? AND node=?) FROM chunks WHERE hash=?", [hash, node, hash]);
      if (!chunk) unknown.push(hash);
      else if (chunk[1] === null) add.push({ hash, size: Number(chunk[0]) });
    }
    const done: Promise<void>[] = [];
    if (add.length) done.push(this.c.commit({ op: "replicas", node, add }).durable);
    // Marks are live figures, not journaled: they only tell this report's replicas from stale ones.
    for (let off = 0; off < buf.length; off += 32) {
      run(db, "UPDATE replicas SET mark=? WHERE hash=? AND node=?", [b.report, buf.toString("hex", off, off + 32), node]);
    }
    this.c.collector.leftovers(node, unknown);
    if (b.last) {
      this.reporting.end(node);
      const stale = all(db, "SELECT hash FROM replicas WHERE node=? AND mark<?", [node, b.report]).map(([h]) => String(h));
      if (stale.length) {
        done.push(this.c.commit({ op: "unreplicate", node, hashes: stale }).durable);
        this.c.log.info("replicas the node no longer holds dropped", { node, chunks: stale.length });
      }
      this.c.repairer.nodeUp(node);
    }
    return Promise.all(done).then(() => ({ unknown: unknown.length }));
  }

  /**
   * A report of a bad replica. From the node itself it is believed; from anyone else the directory asks the
   * node first, so that nobody can delist a good copy by saying so.
   */
  async badReplica(b: { hash: string; node: string; reason: string }, peer: Peer, drop: () => Promise<void>): Promise<void> {
    const { nodes, log } = this.c;
    if (nodes.idOf(peer) === b.node) return drop();
    const holder = nodes.peerOf(b.node);
    if (!holder) return; // A node that is not up does not count as a replica anyway.
    if (await confirmedBad(log, b, peer.name, () => holder.request<VerifyReply>("store.verify", { hash: b.hash }, { timeoutMs: 30_000 }))) return drop();
  }
}
