import { setTimeout as sleep } from "node:timers/promises";
import { createHash, randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { DfsError } from "../../protocol/errors.js";
import { logger, type Logger } from "../../log.js";
import { persistentId, syncDir, writeSynced } from "../durable-file.js";
import { SMALL_CHUNK_MAX } from "./smalllog-format.js";
import { SmallLog, type SmallLogOptions } from "./smalllog.js";

/** Disk space that a put always leaves free, whatever the capacity says. */
const DISK_RESERVE = 64 * 1024 * 1024;
const HASH_RE = /^[0-9a-f]{64}$/;
const FANOUT_RE = /^[0-9a-f]{2}$/;
export interface ChunkStoreInit {
  dir: string;
  /** Most bytes of chunk data this node keeps; unlimited (only disk-bound) when absent. */
  capacity?: number;
  log?: Logger;
  smallLog?: SmallLogOptions;
}

/** Room claimed for a chunk that arrives in pieces, and the temp file it is written to. */
export interface TempChunk {
  readonly path: string;
  readonly size: number;
  /** Gives the claimed room back; idempotent. */
  release(): void;
}

/** A SHA-256 in lowercase hex: the only name a chunk may have on disk. */
export function isChunkHash(s: unknown): s is string {
  return typeof s === "string" && HASH_RE.test(s);
}

function checkHash(hash: unknown): asserts hash is string {
  if (!isChunkHash(hash)) throw new DfsError("BAD_REQUEST", "not a chunk hash (64 lowercase hex digits)");
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Content-addressed chunks on local disk: DIR/chunks/ab/<sha256>, written through DIR/chunks/tmp
 * (exclusive create, fsync, rename, fsync of the folder); chunks up to SMALL_CHUNK_MAX go to the
 * append-only log in DIR/chunks/log instead, where concurrent puts share fsyncs. Every operation on one
 * hash is serialized, so concurrent puts/deletes of the same chunk keep the counters right.
 */
export class ChunkStore {
  private readonly chunksDir: string;
  private readonly tmpDir: string;
  private readonly locks = new Map<string, Promise<void>>();
  private used = 0;
  private count = 0;
  /** Bytes of puts under way, counted against capacity and disk space before they land. */
  private reserved = 0;
  private disk?: { at: number; free: number; used: number };
  /** Fan-out folders known to exist, so a put needs no mkdir. */
  private readonly fanouts = new Set<string>();
  private closed = false;
  /** The small chunks. */
  small!: SmallLog;

  private constructor(
    readonly dir: string,
    readonly nodeId: string,
    private readonly capacity: number | null,
    private readonly log: Logger,
  ) {
    this.chunksDir = path.join(dir, "chunks");
    this.tmpDir = path.join(this.chunksDir, "tmp");
  }

  static async open(init: ChunkStoreInit): Promise<ChunkStore> {
    const log = init.log ?? logger("chunks");
    if (init.capacity !== undefined && !(Number.isFinite(init.capacity) && init.capacity >= 0)) {
      throw new DfsError("BAD_REQUEST", `bad capacity ${init.capacity}`);
    }
    const dir = path.resolve(init.dir);
    await fs.mkdir(path.join(dir, "chunks", "tmp"), { recursive: true });
    const nodeId = await persistentId(path.join(dir, "node-id"));
    const store = new ChunkStore(dir, nodeId, init.capacity ?? null, log);
    await store.cleanTemp();
    store.small = await SmallLog.open(path.join(dir, "chunks", "log"), log, init.smallLog);
    await store.scan();
    log.info("chunk store open", { dir, chunks: store.count, used: store.used, capacity: store.capacity ?? undefined });
    return store;
  }

  /** Removes the temp files that a crash mid-put (or mid node-id write) left behind. */
  private async cleanTemp(): Promise<void> {
    let removed = 0;
    for (const name of await fs.readdir(this.tmpDir)) {
      await fs.rm(path.join(this.tmpDir, name), { recursive: true, force: true });
      removed++;
    }
    for (const name of await fs.readdir(this.dir)) {
      if (/^\.node-id\..+\.tmp$/.test(name)) {
        await fs.rm(path.join(this.dir, name), { force: true });
        removed++;
      }
    }
    if (removed) this.log.info("removed leftover temp files", { count: removed });
  }

  private async scan(): Promise<void> {
    let used = this.small.bytes;
    let count = this.small.index.size;
    for await (const hash of this.fileHashes()) {
      try {
        used += (await fs.stat(this.pathOf(hash))).size;
        count++;
      } catch (err) {
        if (errno(err) !== "ENOENT") throw err;
      }
    }
    this.used = used;
    this.count = count;
  }

  /** The only way a hash becomes a path; it is checked again here, whatever the caller did. */
  private pathOf(hash: string): string {
    checkHash(hash);
    return path.join(this.chunksDir, hash.slice(0, 2), hash);
  }

  /** Runs fn after every earlier operation on the same hash has settled. */
  private async exclusive<T>(hash: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(hash) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(() => undefined, () => undefined);
    this.locks.set(hash, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(hash) === tail) this.locks.delete(hash);
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new DfsError("UNAVAILABLE", "chunk store is closed");
  }

  async put(hash: string, data: Uint8Array): Promise<boolean> {
    checkHash(hash);
    if (!(data instanceof Uint8Array)) throw new DfsError("BAD_REQUEST", "chunk data must be bytes");
    this.checkOpen();
    if (sha256(data) !== hash) {
      throw new DfsError("CORRUPT", `chunk data does not match its hash ${hash}`, { details: { hash } });
    }
    return this.exclusive(hash, async () => {
      this.checkOpen();
      const file = this.pathOf(hash);
      if (await this.has(hash)) return false;
      const size = data.byteLength;
      await this.reserve(hash, size);
      try {
        if (size <= SMALL_CHUNK_MAX) await this.small.put(hash, data);
        else await this.putFile(file, data);
      } catch (err) {
        if (errno(err) === "ENOSPC") throw new DfsError("NO_SPACE", "disk full", { cause: err });
        throw err;
      } finally {
        this.reserved -= size;
      }
      this.used += size;
      this.count++;
      this.log.debug("chunk stored", { hash, size });
      return true;
    });
  }

  private async putFile(file: string, data: Uint8Array): Promise<void> {
    const tmp = path.join(this.tmpDir, randomUUID());
    try {
      await writeSynced(tmp, data);
      await this.moveIntoPlace(tmp, file);
    } catch (err) {
      await fs.rm(tmp, { force: true }).catch(() => undefined);
      throw err;
    }
  }

  /** Renames a finished, fsynced temp file to its chunk's path and makes the name durable. */
  private async moveIntoPlace(tmp: string, file: string): Promise<void> {
    const fanout = path.dirname(file);
    if (!this.fanouts.has(fanout)) {
      const created = await fs.mkdir(fanout, { recursive: true });
      if (created) await syncDir(this.chunksDir);
      this.fanouts.add(fanout);
    }
    await fs.rename(tmp, file);
    await syncDir(fanout);
  }

  /** Claims room for a chunk of `size` bytes, or throws NO_SPACE. */
  private async reserve(hash: string, size: number): Promise<void> {
    const checkCapacity = () => {
      if (this.capacity !== null && this.used + this.reserved + size > this.capacity) {
        const details = { hash, size, used: this.used, capacity: this.capacity };
        throw new DfsError("NO_SPACE", `capacity of ${this.capacity} bytes reached`, { details });
      }
    };
    checkCapacity();
    const disk = await this.diskFree();
    if (disk - this.reserved < size + DISK_RESERVE) {
      throw new DfsError("NO_SPACE", "not enough free disk space", { details: { hash, size, diskFree: disk } });
    }
    checkCapacity(); // again: other puts may have reserved while statfs ran
    this.reserved += size;
  }

  async get(hash: string, opts?: { verify?: boolean }): Promise<Buffer> {
    checkHash(hash);
    let data: Buffer;
    try {
      data = this.small.has(hash) ? await this.small.get(hash) : await fs.readFile(this.pathOf(hash));
    } catch (err) {
      if (errno(err) === "ENOENT") throw new DfsError("NOT_FOUND", `no chunk ${hash}`, { details: { hash } });
      throw err;
    }
    if (opts?.verify && sha256(data) !== hash) {
      this.log.warn("corrupt chunk", { hash });
      throw new DfsError("CORRUPT", `stored chunk ${hash} is corrupt`, { details: { hash } });
    }
    return data;
  }

  async has(hash: string): Promise<boolean> {
    checkHash(hash);
    if (this.small.has(hash)) return true;
    try {
      return (await fs.stat(this.pathOf(hash))).isFile();
    } catch (err) {
      if (errno(err) === "ENOENT") return false;
      throw err;
    }
  }

  /** Deletes a chunk; `unless`, checked once no other operation on the chunk is under way, can veto it. */
  async delete(hash: string, opts: { unless?: () => boolean } = {}): Promise<boolean> {
    checkHash(hash);
    this.checkOpen();
    return this.exclusive(hash, async () => {
      if (opts.unless?.()) return false;
      if (this.small.has(hash)) {
        const size = (await this.small.delete(hash))!;
        this.used = Math.max(0, this.used - size);
        this.count = Math.max(0, this.count - 1);
        this.log.debug("chunk deleted", { hash, size });
        return true;
      }
      const file = this.pathOf(hash);
      let size: number;
      try {
        size = (await fs.stat(file)).size;
        await fs.unlink(file);
      } catch (err) {
        if (errno(err) === "ENOENT") return false;
        throw err;
      }
      await syncDir(path.dirname(file));
      this.used = Math.max(0, this.used - size);
      this.count = Math.max(0, this.count - 1);
      this.log.debug("chunk deleted", { hash, size });
      return true;
    });
  }

  async list(): Promise<string[]> {
    const out: string[] = [];
    for await (const h of this.hashes()) out.push(h);
    return out;
  }

  /** Every stored chunk's hash: the chunk files', then the log's. */
  async *hashes(): AsyncGenerator<string> {
    yield* this.fileHashes();
    yield* this.small.hashes();
  }

  /** Every chunk file's hash, one fan-out folder at a time, so that a million chunks need not sit in one array. */
  private async *fileHashes(): AsyncGenerator<string> {
    for (const sub of (await fs.readdir(this.chunksDir)).sort()) {
      if (!FANOUT_RE.test(sub)) continue;
      let names: string[];
      try {
        names = await fs.readdir(path.join(this.chunksDir, sub));
      } catch (err) {
        if (errno(err) === "ENOENT" || errno(err) === "ENOTDIR") continue;
        throw err;
      }
      for (const name of names) if (isChunkHash(name) && name.startsWith(sub)) yield name;
    }
  }

  /**
   * Re-hashes stored chunks one by one and returns those that are corrupt. `bytesPerSecond` paces the pass
   * so that it never competes with clients for the disk; `onCorrupt` acts on each bad chunk as it is found.
   */
  async verifyAll(opts: { signal?: AbortSignal; bytesPerSecond?: number; onCorrupt?: (hash: string) => Promise<void> } = {}): Promise<string[]> {
    const corrupt: string[] = [];
    for await (const hash of this.hashes()) {
      opts.signal?.throwIfAborted();
      let size = 0;
      try {
        size = (await this.get(hash, { verify: true })).length;
      } catch (err) {
        if (err instanceof DfsError && err.code === "CORRUPT") {
          corrupt.push(hash);
          await opts.onCorrupt?.(hash);
        } else if (!(err instanceof DfsError && err.code === "NOT_FOUND")) throw err; // deleted meanwhile: fine
      }
      if (opts.bytesPerSecond) await sleep(Math.ceil((size / opts.bytesPerSecond) * 1000), undefined, { signal: opts.signal });
    }
    return corrupt;
  }

  usage(): { used: number; chunks: number; capacity: number | null } {
    return { used: this.used, chunks: this.count, capacity: this.capacity };
  }

  /**
   * Free disk bytes, asked of the file system at most once a second (statfs on every put showed up in
   * profiles); bytes this store wrote since are taken off, so the figure only errs on the safe side.
   */
  private async diskFree(): Promise<number> {
    const now = Date.now();
    if (!this.disk || now - this.disk.at > 1000) {
      const s = await fs.statfs(this.dir);
      this.disk = { at: now, free: s.bavail * s.bsize, used: this.used };
    }
    return this.disk.free - Math.max(0, this.used - this.disk.used);
  }

  async free(): Promise<number> {
    const disk = await this.diskFree();
    if (this.capacity === null) return disk;
    return Math.max(0, Math.min(this.capacity - this.used, disk));
  }

  /**
   * Claims room for chunk `hash` of `size` bytes that will arrive in pieces, and names the temp file to
   * write it to. The claim lasts until {@link adopt} takes the file or `release` is called; both may run.
   */
  async reserveTemp(hash: string, size: number): Promise<TempChunk> {
    checkHash(hash);
    this.checkOpen();
    await this.reserve(hash, size);
    let held = true;
    const release = () => {
      if (held) this.reserved -= size;
      held = false;
    };
    return { path: path.join(this.tmpDir, randomUUID()), size, release };
  }

  /**
   * Moves a finished temp file of {@link reserveTemp}, already checked against its hash and fsynced, into
   * place as chunk `hash`; ends the claim. False (and the file removed) when the chunk was there already.
   */
  async adopt(hash: string, temp: TempChunk): Promise<boolean> {
    checkHash(hash);
    return this.exclusive(hash, async () => {
      try {
        this.checkOpen();
        if (await this.has(hash)) {
          await fs.rm(temp.path, { force: true });
          return false;
        }
        await this.moveIntoPlace(temp.path, this.pathOf(hash));
      } catch (err) {
        await fs.rm(temp.path, { force: true }).catch(() => undefined);
        if (errno(err) === "ENOSPC") throw new DfsError("NO_SPACE", "disk full", { cause: err });
        throw err;
      } finally {
        temp.release();
      }
      this.used += temp.size;
      this.count++;
      this.log.debug("chunk stored from stream", { hash, size: temp.size });
      return true;
    });
  }

  /** Stops new writes and waits for those under way. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.locks.size) await Promise.all([...this.locks.values()]);
    await this.small.close();
  }
}
