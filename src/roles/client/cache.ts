import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import type { Logger } from "../../log.js";

/**
 * The client's local chunk cache: chunks by hash, checked on the way in and on the way out,
 * evicted least recently used first once the size bound is passed.
 */
export class ChunkCache {
  /** hash -> size, in recency order (oldest first): a Map keeps insertion order, and a hit re-inserts. */
  private readonly entries = new Map<string, number>();
  private used = 0;
  private readonly fanouts = new Set<string>();
  /** Chunks being written: two reads of one chunk at once store it once. */
  private readonly writing = new Set<string>();

  constructor(
    private readonly dir: string,
    private readonly maxBytes: number,
    private readonly log: Logger,
  ) {
    mkdirSync(dir, { recursive: true });
    const found: { hash: string; size: number; at: number }[] = [];
    for (const fan of readdirSync(dir)) {
      if (!/^[0-9a-f]{2}$/.test(fan)) {
        // Left by versions that wrote the cache through temp files.
        if (fan.startsWith("tmp-")) rmSync(path.join(dir, fan), { force: true });
        continue;
      }
      for (const name of readdirSync(path.join(dir, fan))) {
        if (!/^[0-9a-f]{64}$/.test(name)) continue;
        const st = statSync(path.join(dir, fan, name));
        found.push({ hash: name, size: st.size, at: st.mtimeMs });
      }
    }
    found.sort((a, b) => a.at - b.at);
    for (const f of found) {
      this.entries.set(f.hash, f.size);
      this.used += f.size;
    }
  }

  get bytes(): number {
    return this.used;
  }

  has(hash: string): boolean {
    return this.entries.has(hash);
  }

  /** The cached chunk, or undefined when absent or no longer matching its hash (then it is dropped). */
  async get(hash: string): Promise<Buffer | undefined> {
    if (!this.entries.has(hash)) return undefined;
    let data: Buffer;
    try {
      data = await fs.readFile(this.file(hash));
    } catch {
      this.forget(hash);
      return undefined;
    }
    if (createHash("sha256").update(data).digest("hex") !== hash) {
      this.log.warn("cached chunk corrupt, dropping", { hash });
      await this.remove(hash);
      return undefined;
    }
    const size = this.entries.get(hash)!;
    this.entries.delete(hash);
    this.entries.set(hash, size);
    const now = new Date();
    void fs.utimes(this.file(hash), now, now).catch(() => {});
    return data;
  }

  /** Stores a chunk whose hash the caller has already verified. Chunks larger than the whole cache are skipped. */
  async put(hash: string, data: Uint8Array): Promise<void> {
    if (this.entries.has(hash) || this.writing.has(hash) || data.length > this.maxBytes) return;
    this.writing.add(hash);
    try {
      await this.write(hash, data);
    } finally {
      this.writing.delete(hash);
    }
    await this.evict();
  }

  private async write(hash: string, data: Uint8Array): Promise<void> {
    const file = this.file(hash);
    const fanout = path.dirname(file);
    if (!this.fanouts.has(fanout)) {
      await fs.mkdir(fanout, { recursive: true });
      this.fanouts.add(fanout);
    }
    // Written in place, without a temp file and rename: a torn file (a crash mid-write) fails the hash check
    // of `get` and is dropped, and no reader looks at it before it is listed below.
    await fs.writeFile(file, data);
    this.entries.set(hash, data.length);
    this.used += data.length;
  }

  private async evict(): Promise<void> {
    for (const [hash] of this.entries) {
      if (this.used <= this.maxBytes) break;
      await this.remove(hash);
    }
  }

  private async remove(hash: string): Promise<void> {
    this.forget(hash);
    await fs.rm(this.file(hash), { force: true });
  }

  private forget(hash: string): void {
    const size = this.entries.get(hash);
    if (size === undefined) return;
    this.entries.delete(hash);
    this.used -= size;
  }

  private file(hash: string): string {
    return path.join(this.dir, hash.slice(0, 2), hash);
  }
}

/** Default cache folder: $XDG_CACHE_HOME/dfs or ~/.cache/dfs. */
export function defaultCacheDir(home: string, xdg?: string): string {
  return path.join(xdg && existsSync(xdg) ? xdg : path.join(home, ".cache"), "dfs");
}
