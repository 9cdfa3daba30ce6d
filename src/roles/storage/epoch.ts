import fs from "node:fs/promises";
import path from "node:path";
import { DfsError } from "../../protocol/errors.js";
import type { Logger } from "../../log.js";
import { writeFileDurable } from "../durable-file.js";

const FILE = "runner-epoch";

/**
 * The newest background-runner epoch this node has accepted, kept in its data folder. Directories sharing one
 * database take turns running background work (collection, repair, trimming); each takeover raises the
 * epoch, and a replaced runner may still have orders in flight. An order at a lower epoch is refused, and a
 * raise is on disk before the order that brought it acts, so a restart cannot let an older runner back in.
 */
export class RunnerEpoch {
  /** Raises run one at a time, so the file always ends with the highest, and an order at an epoch still being written waits for it. */
  private queue: Promise<void> = Promise.resolve();

  private constructor(
    private readonly log: Logger,
    private readonly file: string,
    private seen: number,
  ) {}

  static async open(c: { log: Logger }, init: { dataDir: string }): Promise<RunnerEpoch> {
    const file = path.join(init.dataDir, FILE);
    let seen = 0;
    try {
      const text = (await fs.readFile(file, "utf8")).trim();
      // Written atomically, so anything else was put there by hand; guessing a value could readmit a replaced runner.
      if (!/^\d{1,16}$/.test(text) || !Number.isSafeInteger(Number(text))) {
        throw new DfsError("CORRUPT", `${file} does not hold an epoch (a non-negative integer); fix or remove it`);
      }
      seen = Number(text);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    return new RunnerEpoch(c.log, file, seen);
  }

  /**
   * Lets an order from a background runner act, or throws STALE_TOKEN. An order without an epoch comes from a
   * directory that runs alone (the embedded mode) and is let through.
   */
  admit(epoch: number | undefined, what: string): Promise<void> {
    if (epoch === undefined) return Promise.resolve();
    const turn = this.queue.then(() => this.raise(epoch, what));
    this.queue = turn.catch(() => {});
    return turn;
  }

  private async raise(epoch: number, what: string): Promise<void> {
    if (epoch < this.seen) {
      this.log.info("order from a replaced background runner refused", { what, epoch, seen: this.seen });
      throw new DfsError("STALE_TOKEN", `${what} from a background runner that was replaced (epoch ${epoch}, the node has seen ${this.seen})`, {
        details: { epoch, seen: this.seen },
      });
    }
    if (epoch === this.seen) return;
    await writeFileDurable(this.file, `${epoch}\n`);
    this.log.info("background runner epoch raised", { from: this.seen, to: epoch });
    this.seen = epoch;
  }
}
