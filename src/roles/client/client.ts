import { randomInt } from "node:crypto";
import { MAX_COMMIT_FILES, type CommitReply, type FileInfo, type HelloReply, type ListEntry, type StatusReply } from "../../protocol/directory.js";
import { normalizePath } from "../../protocol/common.js";
import { DfsError, toDfsError } from "../../protocol/errors.js";
import { checkFileMeta, type FileMeta } from "../../protocol/file-meta.js";
import type { Peer, RequestOptions } from "../../transport/actor.js";
import { Link } from "../../transport/link.js";
import { Pool } from "../../transport/pool.js";
import type { TlsMaterial } from "../../transport/tls.js";
import type { Logger } from "../../log.js";
import { ChunkCache } from "./cache.js";
import type { Lease } from "./lease.js";
import type { Upstream } from "../upstream.js";
import { LockManager } from "./locks.js";
import { S3Keys } from "./s3keys.js";
import { download, upload, type Source, type TransferCtx, type TransferStats, type Uploaded } from "./transfer.js";

export interface ClientInit {
  /** Addresses of the directory; the client starts at a random one and moves to the next when it fails. */
  directoryUrls: readonly string[];
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
  /** Told of things a person should know at once (a lock taken with `lock` was lost). */
  onNotice?: (message: string) => void;
}

interface Staged extends Uploaded {
  path: string;
  /** Absent for a create, which holds no lock. */
  token?: number;
  baseVersion: number;
  meta?: FileMeta;
}

export interface WriteOptions {
  onProgress?: (bytes: number) => void;
  /**
   * Kept with the new version (at most 64 entries, keys up to 128 characters, 8 KiB as JSON); none when absent.
   * A function is called once the data is read, before the commit: for metadata that depends on the bytes.
   */
  meta?: FileMeta | (() => FileMeta);
}

/** The metadata to commit, checked; a function is asked now. */
function metaNow(meta: WriteOptions["meta"]): FileMeta | undefined {
  return checkFileMeta(typeof meta === "function" ? meta() : meta);
}

export interface WriteResult {
  path: string;
  version: number;
  size: number;
  chunks: number;
  staged: boolean;
}

/** `status` as the client reports it: the directory's answer and the address that reached it. */
export interface ClusterStatus extends StatusReply {
  directory: StatusReply["directory"] & { reachedAt: string };
}

/** Directory requests that change nothing (a placement only reserves a generation): asking again is harmless. */
const SAFE_TO_REPEAT = new Set(["dir.lookup", "dir.list", "dir.status", "dir.hello", "dir.place", "dir.s3key.list", "dir.s3key.get"]);

/** How often a write is tried again when chunks it uploaded were collected before its commit. */
const REWRITES = 2;

/** The client library: every command of the CLI is a call here. */
export class DfsClient {
  readonly stats: TransferStats = { chunksUploaded: 0, chunksDeduplicated: 0, chunksFetched: 0, chunksFromCache: 0, bytesFetched: 0 };
  private readonly dirLink: Link;
  private readonly pool: Pool;
  private chunkCache?: ChunkCache;
  private readonly locks: LockManager;
  /** The S3 gateway's access keys. */
  readonly s3Keys = new S3Keys((type, body) => this.dir(type, body));
  /** Storage nodes that failed a transfer lately, avoided by new placements until then. */
  private readonly avoid = new Map<string, number>();
  private hello?: HelloReply;
  private txn?: Staged[];
  private txnFailed?: DfsError;
  private readonly releasing = new Set<Promise<unknown>>();
  /** Locks a transaction's writes took, held until it commits or aborts. */
  private readonly txnLeases = new Map<string, Lease>();

  constructor(private readonly init: ClientInit) {
    const common = { tls: init.tls, log: init.log, timeoutMs: 10_000 };
    // A random first address, so that many clients spread over the directory processes.
    const urls = init.directoryUrls;
    this.dirLink = new Link({ ...common, urls, startAt: randomInt(Math.max(1, urls.length)), expectRoles: ["directory"], what: "directory" }).start();
    this.pool = new Pool({ ...common, expectRoles: ["storage", "directory"], what: "storage node" });
    this.locks = new LockManager({
      tls: init.tls, log: init.log, ttlMs: init.lockTtlMs ?? 10_000,
      hello: () => this.dir<HelloReply>("dir.hello", {}),
      onLost: (_path, err) => init.onNotice?.(err.message),
    });
  }

  /** Waits for the directory link; fails at once with the cause when the directory was never reachable. */
  async connect(): Promise<void> {
    await this.dirLink.ready({ failFast: true });
  }

  private async dir<T>(type: string, body: unknown, timeoutMs = 30_000): Promise<T> {
    return (await this.ask<T>(type, body, timeoutMs)).reply;
  }

  /**
   * A request to the directory, with the connection that answered it. One that only reads (or only places) is
   * asked again while the directory is unavailable (restarting, or gone and the link moving to its next
   * address), until its deadline; a change whose answer was lost with the connection is reported as of
   * unknown outcome, never sent again: it may have been made before the connection went.
   */
  private async ask<T>(type: string, body: unknown, timeoutMs: number): Promise<{ reply: T; peer: Peer }> {
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      const peer = await this.dirLink.ready({ failFast: true, timeoutMs: Math.max(100, deadline - Date.now()) });
      try {
        return { reply: await peer.request<T>(type, body, { timeoutMs: Math.max(100, deadline - Date.now()) }), peer };
      } catch (err) {
        const e = toDfsError(err);
        if (e.code !== "UNAVAILABLE") throw e;
        if (!SAFE_TO_REPEAT.has(type)) {
          if (!peer.closed) throw e;
          throw new DfsError("UNAVAILABLE", `the directory went away before answering, so this change may or may not have been made (\`stat\` tells): ${e.message}`, {
            cause: e, details: { outcome: "unknown" },
          });
        }
        if (Date.now() >= deadline - 200) throw e;
        await new Promise((r) => setTimeout(r, Math.min(1000, 100 * 2 ** attempt)));
      }
    }
  }

  private async config(): Promise<HelloReply> {
    this.hello ??= await this.dir<HelloReply>("dir.hello", {});
    return this.hello;
  }

  /** The directory as transfers see it: through `dir`, so that placements and lookups ride out a restart. */
  private readonly directory: Upstream = {
    request: <T>(type: string, body: unknown, opts?: RequestOptions) => this.dir<T>(type, body, opts?.timeoutMs),
    tell: (type: string, body: unknown) => this.dirLink.tell(type, body),
  };

  /** Opened on the first transfer: a client that only lists or manages keys never reads the cache folder. */
  private get cache(): ChunkCache {
    this.chunkCache ??= new ChunkCache(this.init.cacheDir, this.init.cacheBytes ?? 1024 ** 3, this.init.log.child("cache"));
    return this.chunkCache;
  }

  private ctx(): TransferCtx {
    return { directory: this.directory, pool: this.pool, cache: this.cache, log: this.init.log, stats: this.stats, window: this.init.window ?? 4, avoid: this.avoid };
  }

  async status(): Promise<ClusterStatus> {
    const { reply, peer } = await this.ask<StatusReply>("dir.status", {}, 30_000);
    return { ...reply, directory: { ...reply.directory, reachedAt: peer.remote } };
  }

  stat(remote: string): Promise<FileInfo> {
    return this.dir<FileInfo>("dir.lookup", { path: normalizePath(remote) });
  }

  /**
   * Files under `prefix` in byte order: at most `limit` (the directory's default when absent), from the first
   * past `after` (the last path of the page before); `meta` adds each file's metadata.
   */
  async ls(prefix = "/", opts: { after?: string; limit?: number; meta?: boolean } = {}): Promise<ListEntry[]> {
    return (await this.dir<{ entries: ListEntry[] }>("dir.list", { prefix, ...opts })).entries;
  }

  /** Takes the write lock on `remote` and keeps it until unlock (or the end of the session). */
  lock(remote: string, opts: { waitMs?: number } = {}): Promise<Lease> {
    return this.locks.acquire(normalizePath(remote), { waitMs: opts.waitMs ?? 0, explicit: true });
  }

  /** Releases a lock taken with `lock`; false when none is held; throws when it was lost. */
  unlock(remote: string): Promise<boolean> {
    return this.locks.unlock(normalizePath(remote));
  }

  /** Whether a file path is locked by this client. */
  holds(remote: string): boolean {
    try {
      return this.locks.held(normalizePath(remote)) !== undefined;
    } catch {
      return false;
    }
  }

  /**
   * Uploads `source` as `remote` and commits it (or stages it inside a transaction). A new file needs no lock:
   * its commit asks the directory to create it only if the path is still absent and nobody holds its lock, so a
   * create costs no lock round trips. A file that exists (or is locked) is written under the write lock. `source`
   * may be a function that opens the data afresh: then a write whose chunks were collected before its commit is
   * simply done again.
   */
  write(remote: string, source: Source | (() => Source), opts: WriteOptions = {}): Promise<WriteResult> {
    return this.put(remote, source, opts);
  }

  /**
   * Commits chunks already stored (another file's, or the parts of an S3 upload) as a new version of `remote`,
   * the way `write` commits: no data moves. Fails CONFLICT if they were collected meanwhile.
   */
  commitChunks(remote: string, chunks: Uploaded, opts: WriteOptions = {}): Promise<WriteResult> {
    const gone = () => {
      throw new DfsError("CONFLICT", `the chunks for ${remote} were collected before they could be committed; store the data again`);
    };
    return this.put(remote, gone, opts, chunks);
  }

  private async put(remote: string, source: Source | (() => Source), opts: WriteOptions, given?: Uploaded): Promise<WriteResult> {
    const path = normalizePath(remote);
    // Checked before any byte is uploaded; the directory checks it again.
    if (typeof opts.meta !== "function") opts = { ...opts, meta: checkFileMeta(opts.meta) };
    const explicit = this.locks.held(path) ?? this.txnLeases.get(path);
    let uploaded: Uploaded | undefined = given;
    if (explicit === undefined && !this.txn) {
      uploaded ??= await this.uploadFrom(source, opts);
      try {
        const reply = await this.commitFiles([{ path, ...uploaded, baseVersion: 0, meta: metaNow(opts.meta) }], true);
        return { path, version: reply.versions[0]!.version, size: uploaded.size, chunks: uploaded.chunks.length, staged: false };
      } catch (err) {
        if (chunksGone(err) && typeof source === "function") uploaded = undefined;
        else if (!existsOrLocked(err)) throw err;
      }
    }
    return this.writeLocked(path, explicit, source, opts, uploaded);
  }

  private uploadFrom(source: Source | (() => Source), opts: WriteOptions): Promise<Uploaded> {
    return this.config().then(({ chunkSize }) => upload(this.ctx(), typeof source === "function" ? source() : source, chunkSize, opts.onProgress));
  }

  /** The write of a path that exists or is locked: under its write lock, reusing chunks already uploaded. */
  private async writeLocked(path: string, explicit: Lease | undefined, source: Source | (() => Source), opts: WriteOptions, uploaded?: Uploaded): Promise<WriteResult> {
    const lease = explicit ?? await this.locks.acquire(path, { waitMs: this.init.lockWaitMs ?? 60_000, explicit: false });
    const own = explicit === undefined;
    try {
      for (let attempt = 0; ; attempt++) {
        // Only a transaction checks the version it started from; a plain write is fenced by its lock token.
        const baseVersion = this.txn ? await this.currentVersion(path) : 0;
        const up = uploaded ?? await this.uploadFrom(source, opts).catch((err) => {
          // All or nothing: a transaction that lost one of its writes may not commit the others.
          if (this.txn) this.txnFailed ??= toDfsError(err);
          throw err;
        });
        uploaded = undefined;
        if (lease.lost) throw lease.lost;
        const staged: Staged = { path, ...up, token: lease.token, baseVersion, meta: metaNow(opts.meta) };
        if (this.txn) {
          this.txn = this.txn.filter((s) => s.path !== path);
          this.txn.push(staged);
          return { path, version: baseVersion, size: up.size, chunks: up.chunks.length, staged: true };
        }
        try {
          const reply = await this.commitFiles([staged], false);
          return { path, version: reply.versions[0]!.version, size: up.size, chunks: up.chunks.length, staged: false };
        } catch (err) {
          if (!chunksGone(err) || typeof source !== "function" || attempt >= REWRITES) throw err;
          this.init.log.info("chunks collected before the commit, writing again", { path });
        }
      }
    } finally {
      // Released in the background: the next request on the lock link queues behind the release anyway.
      if (own && !this.txn) {
        const p: Promise<unknown> = lease.release().finally(() => this.releasing.delete(p));
        this.releasing.add(p);
      } else if (own && this.txn) {
        this.txnLeases.set(path, lease);
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
        ...(f.meta ? { meta: f.meta } : {}),
      })),
      session: this.locks.session,
    });
  }

  /** Fetches `remote` into `sink` chunk by chunk through the cache; returns its metadata. */
  async read(remote: string, sink: (data: Buffer) => Promise<void>, opts: { onStart?: (info: FileInfo) => void; onProgress?: (bytes: number) => void } = {}): Promise<FileInfo> {
    const info = await this.stat(remote);
    opts.onStart?.(info);
    await download(this.ctx(), info, sink, opts.onProgress);
    return info;
  }

  /**
   * Fetches one version (a `stat` answer) into `sink`, whole or bytes [start, end): its chunks never change,
   * so the bytes are that version's even if the file is replaced meanwhile.
   */
  readVersion(info: FileInfo, sink: (data: Buffer) => Promise<void>, range?: { start: number; end: number }): Promise<void> {
    return download(this.ctx(), info, sink, undefined, range);
  }

  async rm(remote: string): Promise<void> {
    const path = normalizePath(remote);
    const lease = this.locks.held(path);
    await this.dir("dir.remove", { path, token: lease?.token, session: this.locks.session });
  }

  async mv(from: string, to: string): Promise<void> {
    const f = normalizePath(from);
    const t = normalizePath(to);
    const [fromLease, toLease] = [this.locks.held(f), this.locks.held(t)];
    await this.dir("dir.move", { from: f, to: t, fromToken: fromLease?.token, toToken: toLease?.token, session: this.locks.session });
  }

  begin(): void {
    if (this.txn) throw new DfsError("CONFLICT", "a transaction is already open; commit or abort it first");
    this.txn = [];
    this.txnFailed = undefined;
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
      if (files.length > MAX_COMMIT_FILES) {
        throw new DfsError("BAD_REQUEST", `a transaction commits at most ${MAX_COMMIT_FILES} files, this one has ${files.length}; nothing was committed`);
      }
      for (const l of this.txnLeases.values()) if (l.lost) throw l.lost;
      for (const f of files) this.locks.held(f.path);
      return await this.commitFiles(files, true);
    } finally {
      await this.endTransaction();
    }
  }

  async abort(): Promise<number> {
    const files = this.txn;
    if (!files) throw new DfsError("BAD_REQUEST", "no transaction is open");
    await this.endTransaction();
    return files.length;
  }

  private async endTransaction(): Promise<void> {
    this.txn = undefined;
    this.txnFailed = undefined;
    const leases = [...this.txnLeases.values()];
    this.txnLeases.clear();
    await Promise.all(leases.map((l) => l.release()));
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.releasing]);
    if (this.txn) await this.endTransaction();
    await this.locks.close();
    await this.dirLink.close();
    await this.pool.close();
  }
}

/** A create refused because the path exists by now, or someone holds its lock: the write then takes the lock. */
function existsOrLocked(err: unknown): boolean {
  const e = toDfsError(err);
  return e.code === "LOCKED" || (e.code === "CONFLICT" && e.details?.baseVersion === 0);
}

/** A commit refused because chunks it names were collected meanwhile: writing again will store them again. */
function chunksGone(err: unknown): boolean {
  const e = toDfsError(err);
  return e.code === "CONFLICT" && e.details?.reason === "chunks-gone";
}
