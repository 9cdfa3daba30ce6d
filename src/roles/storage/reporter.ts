import type { Upstream } from "../upstream.js";

/**
 * Tells the directory about newly stored chunks, batching everything stored in the same tick into one
 * request, so that many small writes cost one round trip. Each caller learns when its chunk is recorded.
 */
export class Reporter {
  private batch: { hash: string; size: number }[] = [];
  private waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private scheduled = false;

  constructor(private readonly directory: Upstream) {}

  report(hash: string, size: number): Promise<void> {
    this.batch.push({ hash, size });
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flush());
    }
    return p;
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    const chunks = this.batch.splice(0, 100_000);
    const waiters = this.waiters.splice(0, chunks.length);
    try {
      await this.directory.request("dir.stored", { chunks }, { timeoutMs: 15_000 });
      for (const w of waiters) w.resolve();
    } catch (err) {
      for (const w of waiters) w.reject(err);
    }
    if (this.batch.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flush());
    }
  }
}
