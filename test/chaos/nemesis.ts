import type { Cluster, Proc } from "../helpers/cluster.js";
import type { Ledger } from "./ledger.js";
import { Rng } from "./rng.js";

export type Role = "directory" | "lock" | "storage";

export interface NemesisInit {
  seed: number;
  /** Roles that may be killed, with their odds. */
  roles: Partial<Record<Role, number>>;
  storage: number;
  /** Pause between the start of one fault and the next, ms. */
  gapMs: [number, number];
  /** How long a killed node stays down, ms. */
  downMs: [number, number];
}

/**
 * The scheduler: at random moments kills -9 a random storage node, the directory or the lock service, and
 * restarts it after a random delay (the directory on its port and data, the lock service on a new port,
 * storage nodes on their data). Faults of different roles may overlap; at most one storage node is down.
 */
export class Nemesis {
  private readonly rng: Rng;
  private readonly down = new Set<string>();
  private readonly faults = new Set<Promise<void>>();
  private stopped = false;
  private wake?: () => void;
  private loop?: Promise<void>;
  readonly kills: Record<Role, number> = { directory: 0, lock: 0, storage: 0 };
  /** Every process each node ran as, for its logs. */
  private readonly past: [string, Proc][] = [];

  constructor(private readonly cluster: Cluster, private readonly ledger: Ledger, private readonly init: NemesisInit) {
    this.rng = Rng.stream(init.seed, "nemesis");
  }

  start(): void {
    this.loop = this.run();
  }

  /** Stops making faults and waits until every node it killed runs again. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.loop;
    while (this.faults.size > 0) await Promise.all([...this.faults]);
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      // Drawn whatever happens next, so that the stream of decisions stays the same from run to run.
      const gap = this.rng.int(...this.init.gapMs);
      const role = this.rng.weighted(this.init.roles);
      const storage = this.rng.int(0, this.init.storage - 1);
      const downMs = this.rng.int(...this.init.downMs);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, gap);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      if (this.stopped) break;
      const target = role === "storage" ? `storage-${storage}` : role;
      if (this.down.has(target) || (role === "storage" && [...this.down].some((d) => d.startsWith("storage")))) continue;
      const f: Promise<void> = this.fault(role, target, storage, downMs).finally(() => this.faults.delete(f));
      this.faults.add(f);
    }
  }

  private proc(role: Role, storage: number): Proc {
    const c = this.cluster;
    return role === "directory" ? c.directory : role === "lock" ? c.lock : c.storage[storage]!;
  }

  private async fault(role: Role, target: string, storage: number, downMs: number): Promise<void> {
    this.down.add(target);
    const victim = this.proc(role, storage);
    this.past.push([target, victim]);
    this.ledger.fault("kill", target, `pid=${victim.child.pid}`);
    this.kills[role]++;
    await victim.kill("SIGKILL");
    // The restart comes after the delay even when stop() is waiting: it waits for exactly this.
    await new Promise((r) => setTimeout(r, downMs));
    await this.restart(role, target, storage);
    this.down.delete(target);
  }

  /** Every node process of the run, killed ones first, named `target.N`. */
  processes(): [string, Proc][] {
    const c = this.cluster;
    const now: [string, Proc][] = [["directory", c.directory], ["lock", c.lock], ...c.storage.map((p, i): [string, Proc] => [`storage-${i}`, p])];
    const seen = new Map<string, number>();
    return [...this.past, ...now].map(([name, p]) => {
      const n = (seen.get(name) ?? 0) + 1;
      seen.set(name, n);
      return [`${name}.${n}`, p];
    });
  }

  /** Starts a killed node again; one failed start is retried, a second is in the ledger for the checker. */
  async restart(role: Role, target: string, storage: number): Promise<void> {
    const c = this.cluster;
    for (let attempt = 1; ; attempt++) {
      try {
        if (role === "directory") await c.startDirectory(Number(new URL(c.dirUrl).port));
        else if (role === "lock") await c.startLock();
        else await c.startStorage(storage);
        this.ledger.fault("restart", target, `pid=${this.proc(role, storage).child.pid} url=${this.proc(role, storage).url}`);
        return;
      } catch (err) {
        this.ledger.fault("restart-failed", target, (err as Error).message.slice(0, 2000));
        if (attempt >= 2) return;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }
}
