import type { DeleteReply } from "../../../protocol/storage.js";
import type { PostgresBackend } from "../../../metadata/postgres.js";
import type { Tx } from "../../../metadata/tx.js";
import type { Logger } from "../../../log.js";
import { NOW_MS } from "./nodes.js";
import type { Runner } from "./runner.js";
import { allIn, marks } from "./sql.js";

/** Chunks and leftovers looked at per sweep. */
const SWEEP_LIMIT = 2000;

export interface PgGcComponents {
  log: Logger;
  db: PostgresBackend;
  runner: Runner;
  ask<T>(node: string, type: string, body: unknown, timeoutMs: number): Promise<T>;
}

type Replicas = { hash: string; node: string }[];

/**
 * The collector when several directory processes share the database: only the runner sweeps; a chunk's grace
 * period runs from `chunks.touched` (any process's placement, upload or dereference sets it) and a leftover's
 * from when a report first showed it. A delete is decided in a transaction that confirms the runner's lease,
 * leaves tombstones at a generation, and is sent with the runner's epoch.
 */
export class PgCollector {
  /** Chunk copies the storage nodes confirmed deleted since start, for the metrics. */
  deleted = 0;
  private readonly tombstoneAgeMs: number;

  constructor(private readonly c: PgGcComponents, private readonly init: { graceMs: number }) {
    this.tombstoneAgeMs = Math.max(3_600_000, 2 * init.graceMs);
  }

  /** One bounded pass: due unreferenced chunks, due leftovers, old tombstones. */
  async sweep(): Promise<void> {
    const epoch = this.c.runner.epoch;
    if (epoch === undefined) return;
    const grace = Math.floor(this.init.graceMs);
    const order = await this.c.db.transact(async (tx) => {
      await this.c.runner.confirm(tx, epoch);
      // A chunk that came in with a migration has no time yet: its grace starts now.
      await tx.run(`UPDATE chunks SET touched=${NOW_MS} WHERE refs=0 AND touched=0`);
      const chunks = (await tx.all(`SELECT hash FROM chunks WHERE refs=0 AND touched < ${NOW_MS} - ? LIMIT ?`, [grace, SWEEP_LIMIT])).map(([h]) => String(h));
      const replicas: Replicas = [];
      if (chunks.length) {
        for (const [h, n] of await allIn(tx, "SELECT hash, node FROM replicas WHERE hash IN (*)", chunks)) replicas.push({ hash: String(h), node: String(n) });
        await tx.run(`DELETE FROM chunks WHERE refs=0 AND hash IN (${marks(chunks.length)})`, chunks);
      }
      const due = await tx.all(`SELECT hash, node FROM leftovers WHERE since < ${NOW_MS} - ? LIMIT ?`, [grace, SWEEP_LIMIT]);
      for (const [h, n] of due) {
        await tx.run("DELETE FROM leftovers WHERE hash=? AND node=?", [h, n]);
        // Known by now (its upload was committed or reported late): not a leftover after all.
        if (!(await tx.get("SELECT 1 FROM chunks WHERE hash=?", [h]))) replicas.push({ hash: String(h), node: String(n) });
      }
      await tx.run(`DELETE FROM tombstones WHERE at < ${NOW_MS} - ?`, [this.tombstoneAgeMs]);
      const gen = await this.tombstones(tx, replicas);
      return { chunks: chunks.length, replicas, gen };
    });
    if (order.replicas.length) {
      this.c.log.info("collecting", { unreferenced: order.chunks, replicas: order.replicas.length });
      await this.send(order.replicas, order.gen, epoch, "unused");
    }
  }

  /** Orders copies deleted (surplus ones, from the repair scan), in a transaction that confirms the lease. */
  async drop(replicas: Replicas, why: string): Promise<void> {
    const epoch = this.c.runner.epoch;
    if (epoch === undefined || replicas.length === 0) return;
    const gen = await this.c.db.transact(async (tx) => {
      await this.c.runner.confirm(tx, epoch);
      return this.tombstones(tx, replicas);
    });
    await this.send(replicas, gen, epoch, why);
  }

  /** Removes the replicas from the tables and leaves tombstones at a new generation. */
  private async tombstones(tx: Tx, replicas: Replicas): Promise<number> {
    if (replicas.length === 0) return 0;
    const gen = Number((await tx.get("SELECT nextval('gens')"))![0]);
    for (const r of replicas) {
      await tx.run("DELETE FROM replicas WHERE hash=? AND node=?", [r.hash, r.node]);
      await tx.run(
        `INSERT INTO tombstones(hash, node, gen, at) VALUES(?,?,?,${NOW_MS}) ON CONFLICT(hash, node) DO UPDATE SET gen=excluded.gen, at=excluded.at`,
        [r.hash, r.node, gen],
      );
    }
    return gen;
  }

  private async send(replicas: Replicas, gen: number, epoch: number, why: string): Promise<void> {
    const byNode = new Map<string, string[]>();
    for (const r of replicas) byNode.set(r.node, [...(byNode.get(r.node) ?? []), r.hash]);
    await Promise.all([...byNode].map(async ([node, hashes]) => {
      // A node that cannot be reached keeps them; its next report shows them as leftovers, collected then.
      try {
        const r = await this.c.ask<DeleteReply>(node, "store.delete", { hashes, gen, epoch }, 60_000);
        this.deleted += r.deleted.length;
        this.c.log.info("chunks deleted", { node, why, deleted: r.deleted.length, kept: r.kept.length });
      } catch (err) {
        this.c.log.warn("chunk delete failed", { node, err });
      }
    }));
  }
}
