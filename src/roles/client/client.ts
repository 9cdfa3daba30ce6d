import os from "node:os";
import type { CommitReply, FileInfo, HelloReply, ListEntry, StatusReply } from "../../protocol/directory.js";
import { normalizePath } from "../../protocol/common.js";
import { DfsError, toDfsError } from "../../protocol/errors.js";
import type { LockGrant } from "../../protocol/lock.js";
import { Link } from "../../transport/link.js";
import { Pool } from "../../transport/pool.js";
import type { TlsMaterial } from "../../transport/tls.js";
import type { Logger } from "../../log.js";
import { ChunkCache } from "./cache.js";
import { Lease } from "./lease.js";
import { download, upload, type TransferCtx, type TransferStats, type Uploaded } from "./transfer.js";

export interface ClientInit {
  directoryUrl: string;
  tls: TlsMaterial;
  cacheDir: string;
  /** Cache size bound in bytes; default 1 GiB. */
  cacheBytes?: number;
  log: Logger;
  /** Lease length of write locks; default 10 s. */
  lockTtlMs?: number;
  /** How long a write waits for someone else's lock; default 60 s. */
  lockWaitMs?: number;
  /** Chunks in flight per transfer; default 4. */
  window?: number;
}

export interface Progress {
  (done: number, total: number | undefined): void;
}

interface Staged extends Uploaded {
  path: string;
  token: number;
  baseVersion: number;
}

/** The client library: every command of the CLI is a call here. */
export class DfsClient {
  readonly stats: TransferStats = { chunksUploaded: 0, chunksDeduplicated: 0, chunksFetched: 0, chunksFromCache: 0, bytesFetched: 0 };
  private readonly dirLink: Link;
  private lockLink?: Link;
  private readonly pool: Pool;
  private readonly cache: ChunkCache;
  private readonly leases = new Map<string, Lease>();
  private hello?: HelloReply;
  private txn?: Staged[];
  private txnFailed?: DfsError;
  private readonly releasing = new Set<Promise<unknown>>();

  constructor(private readonly init: ClientInit) {
    const common = { tls: init.tls, log: init.log, timeoutMs: 10_000 };
    this.dirLink = new Link({ ...common, url: init.directoryUrl, expectRoles: ["directory"], what: "directory" }).start();
    this.pool = new Pool({ ...common, expectRoles: ["storage", "directory"], what: "storage node" });
    this.cache = new ChunkCache(init.cacheDir, init.cacheBytes ?? 1024 ** 3, init.log.child("cache"));
  }

  /** Waits for the directory link; fails at once with the cause when the directory was never reachable. */
  async connect(): Promise<void> {
    await this.dirLink.ready({ failFast: true });
  }

  private async dir<T>(type: string, body: unknown, timeoutMs = 30_000): Promise<T> {
    await this.dirLink.ready({ failFast: true });
    return this.dirLink.request<T>(type, body, { timeoutMs });
  }

  private async config(): Promise<HelloReply> {
    this.hello ??= await this.dir<HelloReply>("dir.hello", {});
    return this.hello;
  }

  private async lockService(): Promise<Link> {
    if (this.lockLink) return this.lockLink;
    let { lockUrl } = await this.config();
    if (!lockUrl) {
      this.hello = undefined;
      lockUrl = (await this.config()).lockUrl;
    }
    if (!lockUrl) throw new DfsError("UNAVAILABLE", "no lock service is registered with the directory; start one with `dfs --role lock`");
    this.lockLink = new Link({ url: lockUrl, tls: this.init.tls, log: this.init.log, expectRoles: ["lock", "directory"], what: "lock service" }).start();
    return this.lockLink;
  }

  private ctx(): TransferCtx {
    return { directory: this.dirLink, pool: this.pool, cache: this.cache, log: this.init.log, stats: this.stats, window: this.init.window ?? 4 };
  }

  status(): Promise<StatusReply> {
    return this.dir<StatusReply>("dir.status", {});
  }

  stat(remote: string): Promise<FileInfo> {
    return this.dir<FileInfo>("dir.lookup", { path: normalizePath(remote) });
  }

  async ls(prefix = "/"): Promise<ListEntry[]> {
    return (await this.dir<{ entries: ListEntry[] }>("dir.list", { prefix })).entries;
  }

  /** Takes the write lock on `remote` and keeps it until unlock (or the end of the session). */
  async lock(remote: string, opts: { waitMs?: number } = {}): Promise<Lease> {
    const path = normalizePath(remote);
    const held = this.leases.get(path);
    if (held && !held.lost) return held;
    const link = await this.lockService();
    const ttlMs = this.init.lockTtlMs ?? 10_000;
    const waitMs = opts.waitMs ?? 0;
    const g = await link.request<LockGrant>("lock.acquire", { path, ttlMs, waitMs, owner: lockOwner() }, {
      timeoutMs: waitMs + 15_000,
    });
    const lease = new Lease(link, path, g.token, g.expiresAt, ttlMs, this.init.log);
    this.leases.set(path, lease);
    return lease;
  }

  async unlock(remote: string): Promise<boolean> {
    const path = normalizePath(remote);
    const lease = this.leases.get(path);
    if (!lease) return false;
    this.leases.delete(path);
    await lease.release();
    return true;
  }

  /** Whether a file path is locked by this client. */
  holds(remote: string): boolean {
    return this.leases.has(normalizePath(remote));
  }

  /** Uploads `source` as `remote` under a write lock and commits it (or stages it inside a transaction). */
  async write(remote: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, opts: { onProgress?: (bytes: number) => void } = {}): Promise<{ path: string; version: number; size: number; chunks: number; staged: boolean }> {
    const path = normalizePath(remote);
    const own = !this.leases.has(path);
    const lease = await this.lock(path, { waitMs: this.init.lockWaitMs ?? 60_000 });
    try {
      // Only a transaction checks the version it started from; a plain write is fenced by its lock token.
      const baseVersion = this.txn ? await this.currentVersion(path) : 0;
      const { chunkSize } = await this.config();
      const up = await upload(this.ctx(), source, chunkSize, opts.onProgress).catch((err) => {
        // All or nothing: a transaction that lost one of its writes may not commit the others.
        if (this.txn) this.txnFailed ??= toDfsError(err);
        throw err;
      });
      if (lease.lost) throw lease.lost;
      const staged: Staged = { path, ...up, token: lease.token, baseVersion };
      if (this.txn) {
        this.txn = this.txn.filter((s) => s.path !== path);
        this.txn.push(staged);
        return { path, version: baseVersion, size: up.size, chunks: up.chunks.length, staged: true };
      }
      const reply = await this.commitFiles([staged], false);
      return { path, version: reply.versions[0]!.version, size: up.size, chunks: up.chunks.length, staged: false };
    } finally {
      // Released in the background: the next request on the lock link queues behind the release anyway.
      if (own && !this.txn) {
        const p: Promise<unknown> = this.unlock(path).finally(() => this.releasing.delete(p));
        this.releasing.add(p);
      }
    }
  }

  private async currentVersion(path: string): Promise<number> {
    try {
      return (await this.stat(path)).version;
    } catch (err) {
      if (err instanceof DfsError && err.code === "NOT_FOUND") return 0;
      throw err;
    }
  }

  private commitFiles(files: Staged[], checkBase: boolean): Promise<CommitReply> {
    return this.dir<CommitReply>("dir.commit", {
      files: files.map((f) => ({
        path: f.path, size: f.size, sha256: f.sha256, chunks: f.chunks, token: f.token,
        ...(checkBase ? { baseVersion: f.baseVersion } : {}),
      })),
    });
  }

  /** Fetches `remote` into `sink` chunk by chunk through the cache; returns its metadata. */
  async read(remote: string, sink: (data: Buffer) => Promise<void>, opts: { onStart?: (info: FileInfo) => void; onProgress?: (bytes: number) => void } = {}): Promise<FileInfo> {
    const info = await this.stat(remote);
    opts.onStart?.(info);
    await download(this.ctx(), info, sink, opts.onProgress);
    return info;
  }

  async rm(remote: string): Promise<void> {
    const path = normalizePath(remote);
    await this.dir("dir.remove", { path, token: this.leases.get(path)?.token });
  }

  async mv(from: string, to: string): Promise<void> {
    const f = normalizePath(from);
    await this.dir("dir.move", { from: f, to: normalizePath(to), token: this.leases.get(f)?.token });
  }

  begin(): void {
    if (this.txn) throw new DfsError("CONFLICT", "a transaction is already open; commit or abort it first");
    this.txn = [];
    this.txnFailed = undefined;
  }

  get inTransaction(): boolean {
    return this.txn !== undefined;
  }

  /** Commits every write since begin in one directory transaction, each checked against the version it started from. */
  async commit(): Promise<CommitReply> {
    const files = this.txn;
    if (!files) throw new DfsError("BAD_REQUEST", "no transaction is open; start one with `begin`");
    try {
      if (this.txnFailed) {
        throw new DfsError("CONFLICT", `a write in this transaction failed (${this.txnFailed.message}); nothing was committed`);
      }
      if (files.length === 0) return { versions: [] };
      for (const f of files) {
        const lease = this.leases.get(f.path);
        if (lease?.lost) throw lease.lost;
      }
      return await this.commitFiles(files, true);
    } finally {
      this.txn = undefined;
      this.txnFailed = undefined;
      for (const f of files) await this.unlock(f.path);
    }
  }

  async abort(): Promise<number> {
    const files = this.txn;
    if (!files) throw new DfsError("BAD_REQUEST", "no transaction is open");
    this.txn = undefined;
    this.txnFailed = undefined;
    for (const f of files) await this.unlock(f.path);
    return files.length;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.releasing]);
    for (const lease of this.leases.values()) await lease.release();
    this.leases.clear();
    await this.lockLink?.close();
    await this.dirLink.close();
    await this.pool.close();
  }
}

let owner: string | undefined;
/** Who holds a lock, as others are told: user@host (looked up once; getpwuid is not free). */
function lockOwner(): string {
  if (owner === undefined) {
    let user = "unknown";
    try {
      user = os.userInfo().username;
    } catch {
      // No passwd entry (e.g. an arbitrary uid in a container): the host name still helps.
    }
    owner = `${user}@${os.hostname()}`;
  }
  return owner;
}
