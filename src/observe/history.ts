import type { DirectoryView } from "../roles/directory.js";

export interface HistorySample {
  /** End of the interval, ms since the epoch. */
  t: number;
  /** Bytes of file versions committed in the interval. */
  writtenBytes: number;
  /** Bytes of files clients looked up to read in the interval. */
  readBytes: number;
  underReplicated: number;
  /** Chunk copies repair made in the interval. */
  repaired: number;
}

/** The last minutes of a directory's activity, sampled at a fixed pace, for the status page's chart. */
export class History {
  private readonly samples: HistorySample[] = [];
  private readonly timer: NodeJS.Timeout;
  private last: { writtenBytes: number; readBytes: number; repairCopies: number };

  constructor(private readonly view: DirectoryView, readonly intervalMs = 2000, private readonly keep = 300) {
    const a = view.activity();
    this.last = { writtenBytes: a.writtenBytes, readBytes: a.readBytes, repairCopies: a.repairCopies };
    this.timer = setInterval(() => void this.sample(), intervalMs);
    this.timer.unref();
  }

  list(): { intervalSeconds: number; samples: HistorySample[] } {
    return { intervalSeconds: this.intervalMs / 1000, samples: [...this.samples] };
  }

  private async sample(): Promise<void> {
    const a = this.view.activity();
    let underReplicated = this.samples.at(-1)?.underReplicated ?? 0;
    try {
      underReplicated = (await this.view.status()).underReplicated;
    } catch {
      // A back end that cannot answer now (PostgreSQL away) keeps the last figure; the page shows the gap in time.
    }
    this.samples.push({
      t: Date.now(),
      writtenBytes: a.writtenBytes - this.last.writtenBytes,
      readBytes: a.readBytes - this.last.readBytes,
      underReplicated,
      repaired: a.repairCopies - this.last.repairCopies,
    });
    if (this.samples.length > this.keep) this.samples.shift();
    this.last = { writtenBytes: a.writtenBytes, readBytes: a.readBytes, repairCopies: a.repairCopies };
  }

  close(): void {
    clearInterval(this.timer);
  }
}
