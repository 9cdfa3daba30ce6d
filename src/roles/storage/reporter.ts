import type { StoredReply } from "../../protocol/directory.js";
import { DfsError } from "../../protocol/errors.js";
import type { Upstream } from "../upstream.js";

interface Waiter {
  hash: string;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Tells the directory about newly stored chunks, batching everything stored in the same tick into one
 * request, so that many small writes cost one round trip. Each caller learns when its chunk is recorded,
 * or that the directory refused it (a delete of it was ordered after the placement it was stored under).
 */
export class Reporter {
  private batch: { hash: string; size: number; gen: number }[] = [];
  private waiters: Waiter[] = [];
  private scheduled = false;

  constructor(private readonly directory: Upstream) {}

  report(hash: string, size: number, gen: number): Promise<void> {
    this.batch.push({ hash, size, gen });
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ hash, resolve, reject }));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flush());
    }
    return p;
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const chunks = this.batch.splice(0, 10_000);
    const waiters = this.waiters.splice(0, chunks.length);
    try {
      const reply = await this.directory.request<StoredReply>("dir.stored", { chunks }, { timeoutMs: 15_000 });
      const refused = new Set(reply.refused);
      for (const w of waiters) {
        if (!refused.has(w.hash)) w.resolve();
        else w.reject(new DfsError("CONFLICT", `chunk ${w.hash.slice(0, 12)} was stored under a placement older than a delete of it; place it again`));
      }
    } catch (err) {
      for (const w of waiters) w.reject(err);
    }
    if (this.batch.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flush());
    }
  }
}
