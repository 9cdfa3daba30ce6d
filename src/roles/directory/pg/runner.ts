import { randomBytes } from "node:crypto";
import type { PostgresBackend } from "../../../metadata/postgres.js";
import type { Tx } from "../../../metadata/tx.js";
import { DfsError } from "../../../protocol/errors.js";
import type { Logger } from "../../../log.js";
import { NOW_MS } from "./nodes.js";

const NAME = "background";

/**
 * Which directory process runs background work: the one holding the `runner` row's lease. A process takes the
 * row once its lease ended (an UPDATE any process may try; the database lets one win) and renews it while it
 * lives; each takeover raises the epoch, which every order of the runner carries, so that storage nodes refuse
 * what a deposed runner still sends.
 */
export class Runner {
  /** This process, as the row names its holder; new on every start, so a restart is a takeover too. */
  private readonly holder = randomBytes(8).toString("hex");
  private epochNow: number | undefined;
  /** Until when this process may act as runner, on its own clock, counted from before the renewal was sent. */
  private until = 0;
  private readonly timer: NodeJS.Timeout;
  private ticking: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly db: PostgresBackend,
    private readonly log: Logger,
    private readonly ttlMs: number,
    /** Called after every renewal attempt, leading or not. */
    private readonly onTick: (leading: boolean) => Promise<void>,
  ) {
    this.timer = setInterval(() => void this.tick(), Math.max(200, Math.floor(ttlMs / 3)));
    this.timer.unref();
  }

  static async ensureRow(tx: Tx): Promise<void> {
    await tx.run("INSERT INTO runner(name, holder, epoch, expires) VALUES(?, '', 0, 0) ON CONFLICT(name) DO NOTHING", [NAME]);
  }

  /** The epoch while this process runs background work. */
  get epoch(): number | undefined {
    return this.leading() ? this.epochNow : undefined;
  }

  leading(): boolean {
    return this.epochNow !== undefined && Date.now() < this.until;
  }

  /** Inside a transaction that changes what background work decided: fails unless this process still leads. */
  async confirm(tx: Tx, epoch: number): Promise<void> {
    const r = await tx.get(`SELECT 1 FROM runner WHERE name=? AND holder=? AND epoch=? AND expires > ${NOW_MS}`, [NAME, this.holder, epoch]);
    if (!r) throw new DfsError("STALE_TOKEN", `this directory no longer runs background work (epoch ${epoch} ended)`);
  }

  tick(): Promise<void> {
    this.ticking ??= this.renew().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async renew(): Promise<void> {
    if (this.closed) return;
    const sent = Date.now();
    try {
      const row = await this.db.transact((tx) => tx.get(
        `UPDATE runner SET epoch = CASE WHEN holder=? THEN epoch ELSE epoch + 1 END, holder=?, expires=${NOW_MS} + ?
         WHERE name=? AND (holder=? OR expires < ${NOW_MS}) RETURNING epoch`,
        [this.holder, this.holder, this.ttlMs, NAME, this.holder],
      ), { timeoutMs: this.ttlMs / 2 });
      if (row) {
        const epoch = Number(row[0]);
        if (epoch !== this.epochNow) this.log.info("running background work", { epoch });
        this.epochNow = epoch;
        this.until = sent + this.ttlMs - 500;
      } else if (this.epochNow !== undefined) {
        this.log.warn("background work taken over by another directory", { epoch: this.epochNow });
        this.epochNow = undefined;
      }
    } catch (err) {
      // Unknown: act as deposed once the lease may have run out.
      this.log.warn("could not renew the background-work lease", { err: (err as Error).message });
    }
    if (!this.closed) await this.onTick(this.leading()).catch((err) => this.log.error("background work failed", { err }));
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.ticking;
    if (this.epochNow === undefined) return;
    // Hands the work over at once rather than after the lease ran out.
    await this.db.transact((tx) => tx.run("UPDATE runner SET expires=0 WHERE name=? AND holder=?", [NAME, this.holder]), { timeoutMs: 2000 }).catch(() => {});
  }
}
