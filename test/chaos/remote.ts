import { createInterface } from "node:readline";
import path from "node:path";
import type { TestContext } from "node:test";
import { spawnScript, type Proc } from "../helpers/cluster.js";
import type { DriverCall, DriverEvent, DriverReply } from "./driver.js";
import type { Ledger, Op, OpFields } from "./ledger.js";

export interface RemoteInit {
  /** Worker name; each process it runs is an incarnation `name.N`. */
  name: string;
  directoryUrl: () => string;
  certs: string;
  root: string;
  ledger: Ledger;
  /** A call unanswered this long is hung: its process is killed and a new one takes over. */
  deadlineMs: number;
}

/**
 * The harness's end of a driver process: every call goes to the ledger with its start, end and outcome.
 * A call that outlives its deadline counts as hung; the process is killed, and the next call starts a new one.
 */
export class Remote {
  private proc?: Proc;
  /** The process being killed on purpose (after a hung call), whose exit is no finding. */
  private killing?: Proc;
  private incarnation = 0;
  private nextId = 1;
  private readonly pending = new Map<number, (r: DriverReply) => void>();

  constructor(private readonly t: TestContext, private readonly init: RemoteInit) {}

  /** Who the cluster sees: a killed process's locks are not its successor's. */
  get client(): string {
    return `${this.init.name}.${this.incarnation}`;
  }

  private async ensure(): Promise<void> {
    if (this.proc?.alive) return;
    this.incarnation++;
    const name = this.client;
    const p = spawnScript(this.t, "test/chaos/driver.ts", [
      "--directory", this.init.directoryUrl(), "--certs", this.init.certs, "--cache", path.join(this.init.root, `cache-${name}`), "--name", name,
    ], { env: { DFS_LOG_LEVEL: "warn" } });
    this.proc = p;
    createInterface({ input: p.child.stdout! }).on("line", (line) => this.onLine(name, line));
    void p.exited.then((code) => {
      if (this.proc === p) this.proc = undefined;
      if (this.killing === p) return;
      // A client library that takes its process down is a finding; its calls end now, outcome unknown.
      this.init.ledger.clientExited(name, code, p.stderr);
      for (const [id, answer] of this.pending) answer({ id, ok: false, code: "CLIENT_EXITED", message: `driver exited with ${code}` });
    });
  }

  private onLine(name: string, line: string): void {
    let msg: DriverReply | DriverEvent;
    try {
      msg = JSON.parse(line) as DriverReply | DriverEvent;
    } catch {
      return;
    }
    if ("event" in msg) {
      this.init.ledger.leaseLost(name, msg.path, msg.token);
      return;
    }
    this.pending.get(msg.id)?.(msg);
  }

  /** Runs one call and returns its ledger entry. */
  async call(req: DriverCall, fields: OpFields = {}): Promise<Op> {
    await this.ensure();
    const id = this.nextId++;
    const op = this.init.ledger.begin(this.client, req, fields);
    const proc = this.proc!;
    const reply = await new Promise<DriverReply | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), this.init.deadlineMs);
      this.pending.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      proc.child.stdin!.write(JSON.stringify({ id, ...req }) + "\n");
    });
    this.pending.delete(id);
    if (!reply) {
      this.init.ledger.hung(op);
      this.killing = proc;
      await proc.kill("SIGKILL");
      return op;
    }
    this.init.ledger.end(op, reply);
    return op;
  }

  /** Stops the driver the polite way (its client closes and releases its locks). */
  async close(): Promise<void> {
    const p = this.proc;
    if (!p?.alive) return;
    this.killing = p;
    p.child.stdin!.end();
    const done = await Promise.race([p.exited.then(() => true), new Promise((r) => setTimeout(() => r(false), 10_000))]);
    if (!done) await p.kill("SIGKILL");
  }
}
