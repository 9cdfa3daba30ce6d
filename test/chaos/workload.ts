import type { Content } from "./content.js";
import type { DriverCall } from "./driver.js";
import type { Ledger, Op, OpFields } from "./ledger.js";
import type { Remote } from "./remote.js";
import { Rng } from "./rng.js";

export const SHARED = ["/shared/s0", "/shared/s1", "/shared/s2", "/shared/s3"];
const PRIVATE = 5;
const CHUNK = 16 * 1024;
/** Contents several writes store again and again (same bytes, same chunks): they race with the collection of orphans. */
const REPEATED = 4;

export const privatePaths = (worker: number) => Array.from({ length: PRIVATE }, (_, j) => `/c${worker}/p${j}`);

const ACTIONS = {
  writePrivate: 16, writeShared: 12, read: 20, rmPrivate: 4, rmShared: 4, mvPrivate: 3, mvShared: 3, txn: 10, lockSection: 24,
};
type Action = keyof typeof ACTIONS;

/** Ids of sections and transactions, unique in a run. */
let serial = 0;

/**
 * One client's workload: a sequence of actions drawn from its own seeded stream. Each client owns its private
 * paths (it alone writes them), and all of them write, remove, rename and lock the shared ones.
 */
export class Worker {
  private readonly rng: Rng;
  private written = 0;
  private moved = 0;
  private readonly mine: string[];
  private readonly movedTo: string[] = [];
  /** Whether a call of the current action ended with an unknown outcome. */
  private troubled = false;

  constructor(
    private readonly seed: number,
    readonly index: number,
    private readonly remote: Remote,
    private readonly ledger: Ledger,
  ) {
    this.rng = Rng.stream(seed, `client${index}`);
    this.mine = privatePaths(index);
  }

  /** Runs actions until `stop()` says so; a call that ends badly is in the ledger, never thrown. */
  /** Starts the client process and waits for its first link to the directory. */
  async connect(): Promise<void> {
    await this.call({ op: "connect" });
  }

  async run(stop: () => boolean): Promise<void> {
    while (!stop()) {
      this.troubled = false;
      await this.act(this.rng.weighted(ACTIONS));
      // A client whose node is down backs off a little instead of spinning; no draw depends on it.
      await sleep(this.rng.int(0, 150) + (this.troubled ? 500 : 0));
    }
  }

  private async call(req: DriverCall, fields: OpFields = {}): Promise<Op> {
    const op = await this.remote.call(req, fields);
    if (op.status === "indet" || op.status === "hung") this.troubled = true;
    return op;
  }

  /** After the cluster healed: one plain write, which must succeed within `withinMs`. */
  async probe(withinMs: number): Promise<Op> {
    const deadline = Date.now() + withinMs;
    for (;;) {
      const op = await this.call({ op: "write", path: `/c${this.index}/probe`, content: this.fresh() }, { probe: true });
      if (op.status === "ok" || Date.now() > deadline) return op;
      await sleep(2000);
    }
  }

  close(): Promise<void> {
    return this.remote.close();
  }

  /** Half the time the first shared path: a hot lock keeps writers queued behind each other. */
  private shared(): string {
    return this.rng.chance(0.5) ? SHARED[0]! : this.rng.pick(SHARED);
  }

  private fresh(): Content {
    return this.ledger.content({ id: `s${this.seed}.c${this.index}.${++this.written}`, size: this.size() });
  }

  private size(): number {
    return this.rng.chance(0.3) ? this.rng.int(1, 3000) : this.rng.int(CHUNK, 5 * CHUNK);
  }

  /** New bytes, or (sometimes) one of the run's repeated contents. */
  private content(): Content {
    if (!this.rng.chance(0.3)) return this.fresh();
    const k = this.rng.int(0, REPEATED - 1);
    return this.ledger.content({ id: `s${this.seed}.repeated${k}`, size: (k + 1) * CHUNK + 100 });
  }

  private async act(action: Action): Promise<void> {
    const r = this.rng;
    switch (action) {
      case "writePrivate":
        return void (await this.call({ op: "write", path: r.pick(this.mine), content: this.content() }));
      case "writeShared":
        return void (await this.call({ op: "write", path: this.shared(), content: this.content() }));
      case "read": {
        const where = r.next();
        const path = where < 0.4 ? r.pick(this.mine) : where < 0.85 || this.movedTo.length === 0 ? this.shared() : r.pick(this.movedTo);
        return void (await this.call({ op: "read", path }));
      }
      case "rmPrivate":
        return void (await this.call({ op: "rm", path: r.pick(this.mine) }));
      case "rmShared":
        return void (await this.call({ op: "rm", path: this.shared() }));
      case "mvPrivate":
      case "mvShared":
        return this.move(action === "mvPrivate" ? r.pick(this.mine) : this.shared());
      case "txn":
        return this.transaction();
      case "lockSection":
        return this.lockSection();
    }
  }

  /** Renames to a fresh name of this client's, which nobody else ever writes. */
  private async move(from: string): Promise<void> {
    const to = `/c${this.index}/mv${++this.moved}`;
    this.movedTo.push(to);
    await this.call({ op: "mv", from, to });
  }

  /** begin; 2-3 writes (private, sometimes one shared); commit, or now and then abort. */
  private async transaction(): Promise<void> {
    // Every draw is made before the first call, so that outcomes do not change later decisions.
    const r = this.rng;
    const txn = ++serial;
    const paths = [...this.mine].sort(() => r.next() - 0.5).slice(0, r.int(2, 3));
    if (r.chance(0.25)) paths[0] = this.shared();
    // Fresh bytes only: the checker tells a transaction's files by their content.
    const contents = paths.map(() => this.fresh());
    const commit = r.chance(0.85);
    await this.call({ op: "begin" }, { txn });
    for (const [i, path] of paths.entries()) await this.call({ op: "write", path, content: contents[i]! }, { txn });
    await this.call(commit ? { op: "commit" } : { op: "abort" }, { txn });
  }

  /** lock; write; read back (must be our write); sometimes rm; unlock. */
  private async lockSection(): Promise<void> {
    const r = this.rng;
    const section = ++serial;
    const path = r.chance(0.9) ? this.shared() : r.pick(this.mine);
    const waitMs = r.int(0, 4000);
    const content = this.content();
    const pause = r.int(0, 1000);
    const rm = r.chance(0.15);
    const granted = await this.call({ op: "lock", path, waitMs }, { section });
    if (granted.status !== "ok") return;
    try {
      await this.call({ op: "write", path, content }, { section });
      await sleep(pause);
      await this.call({ op: "read", path }, { section });
      if (rm) await this.call({ op: "rm", path }, { section });
    } finally {
      await this.call({ op: "unlock", path }, { section });
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
