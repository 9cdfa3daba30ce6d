import { setTimeout as sleep } from "node:timers/promises";
import { toDfsError } from "../../protocol/errors.js";
import type { Logger } from "../../log.js";
import type { Upstream } from "../upstream.js";
import type { ChunkStore } from "./chunkstore.js";

export interface ScrubberInit {
  /** Pause between two passes over all chunks. */
  intervalMs: number;
  /** Re-hash rate, so a pass never competes with clients for the disk. Default 32 MiB/s. */
  bytesPerSecond?: number;
}

/**
 * Re-hashes stored chunks slowly, forever: a chunk that no longer matches its name is deleted here and
 * reported to the directory, which then copies it again from a good replica.
 */
export class Scrubber {
  private readonly abort = new AbortController();
  private readonly done: Promise<void>;

  constructor(
    private readonly components: { log: Logger; chunks: ChunkStore; directory: Upstream; nodeId: () => string },
    private readonly init: ScrubberInit,
  ) {
    this.done = this.loop().catch((err) => {
      if (!this.abort.signal.aborted) components.log.error("scrubber stopped", { err });
    });
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.done;
  }

  private async loop(): Promise<void> {
    const signal = this.abort.signal;
    for (;;) {
      await sleep(this.init.intervalMs, undefined, { signal });
      const bad = await this.components.chunks.verifyAll({
        signal,
        bytesPerSecond: this.init.bytesPerSecond ?? 32 * 1024 * 1024,
        onCorrupt: (hash) => this.condemn(hash),
      });
      this.components.log.debug("scrub pass done", { corrupt: bad.length });
    }
  }

  private async condemn(hash: string): Promise<void> {
    this.components.log.warn("corrupt chunk found by scrub", { hash });
    await this.components.chunks.delete(hash);
    try {
      await this.components.directory.request("dir.badReplica", { hash, node: this.components.nodeId(), reason: "scrub: hash mismatch" });
    } catch (err) {
      // The directory learns it anyway at this node's next registration, whose chunk report lacks it.
      this.components.log.warn("could not report corrupt chunk", { hash, err: toDfsError(err).message });
    }
  }
}
