import type { RegisterBody, RegisterReply, ReportBody, ReportReply } from "../../../protocol/directory.js";
import type { VerifyReply } from "../../../protocol/storage.js";
import type { PostgresBackend } from "../../../metadata/postgres.js";
import type { Peer } from "../../../transport/actor.js";
import type { Logger } from "../../../log.js";
import { Reports } from "../reports.js";
import { checkRegistration, confirmedBad } from "../rules.js";
import type { PgLeases } from "./leases.js";
import { NOW_MS, type PgNodes } from "./nodes.js";
import { allIn } from "./sql.js";

export interface PgMembershipComponents {
  log: Logger;
  db: PostgresBackend;
  nodes: PgNodes;
  leases: PgLeases;
  /** Sends a request to a storage node, on its link to this process or a connection of its own. */
  ask<T>(node: string, type: string, body: unknown, timeoutMs: number): Promise<T>;
  /** Something changed that background work should look at soon. */
  changed(): void;
}

/** Registration and chunk reports in PostgreSQL: the same rules as the embedded store, in a transaction each. */
export class PgMembership {
  private readonly reporting = new Reports();

  constructor(
    private readonly c: PgMembershipComponents,
    readonly clusterId: string,
    private readonly init: { replicas: number; heartbeatMs: number },
  ) {}

  async register(b: RegisterBody, peer: Peer): Promise<RegisterReply> {
    const { db, nodes, leases } = this.c;
    const { link, reply } = await db.transact(async (tx) => {
      const known = await tx.get("SELECT cert, secret, role FROM nodes WHERE id=?", [b.id]);
      const [cert, kept, role] = (known ?? []).map((v) => (v === null ? undefined : String(v)));
      const secret = checkRegistration(b, peer, this.clusterId, known ? { cert, secret: kept, role: role! } : undefined);
      await tx.run(
        `INSERT INTO nodes(id, role, url, zone, capacity, cert, secret) VALUES(?,?,?,?,?,?,?)
         ON CONFLICT(id) DO UPDATE SET role=excluded.role, url=excluded.url, zone=excluded.zone, capacity=excluded.capacity,
         cert=COALESCE(nodes.cert, excluded.cert), secret=COALESCE(nodes.secret, excluded.secret)`,
        [b.id, b.kind, b.url, b.zone, b.capacity, peer.name, secret ?? null],
      );
      const link = await nodes.attach(tx, b.id, { free: b.free, used: b.used, chunks: b.chunks });
      const storage = b.kind === "storage";
      // Every generation handed out so far is below this one: the node's floor for deletes.
      const gen = storage ? Number((await tx.get("SELECT nextval('gens')"))![0]) : 0;
      const report = storage ? Number((await tx.get("SELECT nextval('report_marks')"))![0]) : 0;
      const live = b.kind === "lock" ? await leases.live(tx) : [];
      const reply: RegisterReply = {
        accepted: true, replicas: this.init.replicas, heartbeatMs: this.init.heartbeatMs, clusterId: this.clusterId,
        gen, report, leases: live,
      };
      return { link, reply };
    });
    nodes.linked(b.id, peer, link);
    if (b.kind === "storage") this.reporting.start(b.id, reply.report, peer);
    this.c.changed();
    return reply;
  }

  /**
   * One page of a storage node's chunk list: known chunks are (re)confirmed as replicas with this report's mark,
   * unknown ones are kept as leftovers for the collector; the last page drops replicas the report did not name.
   */
  async report(b: ReportBody, peer: Peer): Promise<ReportReply> {
    const { db, nodes } = this.c;
    const node = this.reporting.check(nodes.idOf(peer), peer, b.report);
    nodes.heard(peer);
    const buf = Buffer.from(b.hashes.buffer, b.hashes.byteOffset, b.hashes.byteLength);
    const hashes: string[] = [];
    for (let off = 0; off < buf.length; off += 32) hashes.push(buf.toString("hex", off, off + 32));
    const { unknown, stale } = await db.transact(async (tx) => {
      let unknown = 0;
      for (let i = 0; i < hashes.length; i += 1000) {
        const part = hashes.slice(i, i + 1000);
        const known = new Set((await allIn(tx, "SELECT hash FROM chunks WHERE hash IN (*)", part)).map(([h]) => String(h)));
        const mine = part.filter((h) => known.has(h));
        const other = part.filter((h) => !known.has(h));
        unknown += other.length;
        if (mine.length) {
          await tx.run(
            `INSERT INTO replicas(hash, node, mark) VALUES ${mine.map(() => "(?,?,?)").join(",")}
             ON CONFLICT(hash, node) DO UPDATE SET mark=excluded.mark`,
            mine.flatMap((h) => [h, node, b.report]),
          );
        }
        if (other.length) {
          await tx.run(
            `INSERT INTO leftovers(hash, node, since) VALUES ${other.map(() => `(?,?,${NOW_MS})`).join(",")} ON CONFLICT(hash, node) DO NOTHING`,
            other.flatMap((h) => [h, node]),
          );
        }
      }
      const stale = b.last ? await tx.run("DELETE FROM replicas WHERE node=? AND mark<?", [node, b.report]) : 0;
      return { unknown, stale };
    });
    if (b.last) {
      this.reporting.end(node);
      if (stale) this.c.log.info("replicas the node no longer holds dropped", { node, chunks: stale });
      this.c.changed();
    }
    return { unknown };
  }

  /**
   * A report of a bad replica. From the node itself it is believed; from anyone else the directory asks the
   * node first, so that nobody can delist a good copy by saying so.
   */
  async badReplica(b: { hash: string; node: string; reason: string }, peer: Peer): Promise<void> {
    const own = this.c.nodes.idOf(peer) === b.node;
    if (!own && !(await confirmedBad(this.c.log, b, peer.name, () => this.c.ask<VerifyReply>(b.node, "store.verify", { hash: b.hash }, 30_000)))) return;
    await this.c.db.transact((tx) => tx.run("DELETE FROM replicas WHERE hash=? AND node=?", [b.hash, b.node]));
    this.c.changed();
  }
}
