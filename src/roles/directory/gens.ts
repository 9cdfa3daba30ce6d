import type { Database } from "sql.js";
import type { DirRecord } from "./schema.js";
import { metaNumber } from "./schema.js";

/** Generations reserved per journal record: one fsync covers this many placements and delete orders. */
const BLOCK = 10_000;

/**
 * Generations order placements against delete orders: a put carries the generation of its placement, a delete
 * the generation at which the directory decided it, and a storage node never lets a delete remove a chunk stored
 * under a newer placement. They only grow, also across restarts: a ceiling is journaled before any generation
 * below it is handed out, and a restart continues from the last ceiling.
 */
export class Generations {
  private next: number;
  private ceiling: number;
  /** Resolves when the latest ceiling is on disk. */
  private durable: Promise<void> = Promise.resolve();

  constructor(
    db: Database,
    private readonly commit: (rec: DirRecord) => { durable: Promise<void> },
  ) {
    this.next = this.ceiling = (metaNumber(db, "gen") ?? 0) + 1;
  }

  /** The generation now, without taking one (what a registering node may treat as its floor). */
  get current(): number {
    return this.next - 1;
  }

  /** Takes a generation; it may be used once `whenDurable` has resolved. */
  take(): number {
    if (this.next >= this.ceiling) {
      this.ceiling = this.next + BLOCK;
      this.durable = this.commit({ op: "gen", ceiling: this.ceiling }).durable;
    }
    return this.next++;
  }

  /** Resolves when every generation taken so far survives a restart. */
  whenDurable(): Promise<void> {
    return this.durable;
  }
}
