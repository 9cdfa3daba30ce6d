import { createHash } from "node:crypto";
import type { FileInfo, PlaceReply, Replica } from "../../protocol/directory.js";
import { DfsError, toDfsError } from "../../protocol/errors.js";
import { PIECE_SIZE, transferTimeoutMs, type PutReply, type GetReply } from "../../protocol/storage.js";
import type { Logger } from "../../log.js";
import type { PeerPool, Upstream } from "../upstream.js";
import type { ChunkCache } from "./cache.js";
import { chainPut } from "./chain-put.js";

export interface TransferStats {
  chunksUploaded: number;
  chunksDeduplicated: number;
  chunksFetched: number;
  chunksFromCache: number;
  bytesFetched: number;
}

export interface TransferCtx {
  directory: Upstream;
  pool: PeerPool;
  cache: ChunkCache;
  log: Logger;
  stats: TransferStats;
  /** Chunks in flight at once: bounds memory to about window x chunk size. */
  window: number;
  /** Storage node id -> until when new placements avoid it (it failed a transfer). */
  avoid: Map<string, number>;
}

/** What a write reads from. */
export type Source = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/** How long a placement waits for storage nodes that are reconnecting (to a restarted directory, say). */
const RECONNECT_WAIT_MS = 10_000;

/** How long a storage node that failed a transfer is left out of this client's placements. */
const AVOID_MS = 30_000;

export interface Uploaded {
  size: number;
  sha256: string;
  chunks: string[];
}

/** Cuts a byte stream into chunks of exactly `size` bytes (the last may be shorter), copying at most once. */
export async function* rechunk(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const piece of source) {
    let buf = Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    while (buf.length > 0) {
      const take = Math.min(size - have, buf.length);
      parts.push(buf.subarray(0, take));
      have += take;
      buf = buf.subarray(take);
      if (have === size) {
        yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, have);
}

/** Stores every chunk of `source` on enough storage nodes; returns what the commit needs. */
export async function upload(
  ctx: TransferCtx,
  source: Source,
  chunkSize: number,
  onProgress?: (bytes: number) => void,
): Promise<Uploaded> {
  const whole = createHash("sha256");
  const chunks: string[] = [];
  const inflight: Promise<void>[] = [];
  let size = 0;
  try {
    for await (const data of rechunk(source, chunkSize)) {
      whole.update(data);
      const hash = createHash("sha256").update(data).digest("hex");
      chunks.push(hash);
      size += data.length;
      const stored = storeChunk(ctx, hash, data).then(() => onProgress?.(data.length));
      stored.catch(() => {}); // Observed below, in order; this only keeps an early failure from being unhandled.
      inflight.push(stored);
      if (inflight.length >= ctx.window) await inflight.shift();
    }
    await Promise.all(inflight);
  } catch (err) {
    // Let the chunks already under way finish or fail quietly before reporting the first error.
    await Promise.allSettled(inflight);
    throw err;
  }
  return { size, sha256: whole.digest("hex"), chunks };
}

function avoided(ctx: TransferCtx): string[] {
  const now = Date.now();
  for (const [node, until] of ctx.avoid) if (until <= now) ctx.avoid.delete(node);
  return [...ctx.avoid.keys()];
}

async function storeChunk(ctx: TransferCtx, hash: string, data: Buffer): Promise<void> {
  const exclude: string[] = [];
  const reconnectDeadline = Date.now() + RECONNECT_WAIT_MS;
  let lastError: DfsError | undefined;
  for (let attempt = 0; attempt < 4; attempt++) {
    let place: PlaceReply;
    try {
      place = await ctx.directory.request<PlaceReply>("dir.place", { chunks: [{ hash, size: data.length }], exclude: [...new Set([...exclude, ...avoided(ctx)])] });
    } catch (err) {
      const e = toDfsError(err);
      if (e.code !== "NOT_ENOUGH_NODES") throw e;
      // Avoiding nodes must not make a write fail that the whole cluster could take.
      if (ctx.avoid.size > 0) {
        ctx.avoid.clear();
        continue;
      }
      // Nodes that are reconnecting (a directory that just restarted) are worth a short wait.
      if (!(Number(e.details?.reconnecting) > 0) || Date.now() >= reconnectDeadline) throw e;
      attempt--;
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    const targets = place.chunks[0]?.targets ?? [];
    if (targets.length === 0) {
      ctx.stats.chunksDeduplicated++;
      return;
    }
    const [first, ...rest] = targets as [Replica, ...Replica[]];
    try {
      const chain = rest.map((r) => r.url);
      const reply = data.length > PIECE_SIZE
        ? await chainPut(ctx.pool, first.url, { hash, gen: place.gen, chain }, data)
        : await ctx.pool.request<PutReply>(first.url, "store.put", { hash, gen: place.gen, chain, data }, { timeoutMs: transferTimeoutMs(data.length, targets.length) });
      ctx.stats.chunksUploaded++;
      const missing = targets.filter((t) => !reply.stored.includes(t.url));
      if (missing.length === 0) return;
      // Part of the chain failed: ask again; the directory now counts the copies that did land.
      for (const m of missing) {
        exclude.push(m.node);
        ctx.avoid.set(m.node, Date.now() + AVOID_MS);
      }
      lastError = new DfsError("UNAVAILABLE", `storage node(s) ${missing.map((m) => m.url).join(", ")} did not take chunk ${hash.slice(0, 12)}`);
    } catch (err) {
      lastError = toDfsError(err);
      if (lastError.code === "CORRUPT" || lastError.code === "BAD_REQUEST") throw lastError;
      // CONFLICT: a delete of this chunk was ordered after our placement; a new placement outranks it.
      if (lastError.code !== "CONFLICT") {
        exclude.push(first.node);
        ctx.avoid.set(first.node, Date.now() + AVOID_MS);
      }
      ctx.log.debug("chunk upload failed, re-placing", { hash, node: first.node, err: lastError.message });
    }
  }
  throw lastError ?? new DfsError("UNAVAILABLE", `chunk ${hash.slice(0, 12)} could not be stored`);
}

/**
 * Streams a file's chunks in order into `sink`, from the cache where possible. Every chunk is checked against its
 * name (its SHA-256) before it is passed on, and a chunk list names its file's bytes exactly, so each byte is
 * hashed once; hashing the whole file again would only repeat that work.
 */
export async function download(
  ctx: TransferCtx,
  info: FileInfo,
  sink: (data: Buffer) => Promise<void>,
  onProgress?: (bytes: number) => void,
  range?: { start: number; end: number },
): Promise<void> {
  // A range fetches only the chunks it overlaps, and cuts the first and last of them.
  let next = 0;
  let last = info.chunks.length;
  let skip = 0;
  let want = Infinity;
  if (range) {
    let offset = 0;
    next = last;
    for (let i = 0; i < info.chunks.length; i++) {
      const end = offset + info.chunks[i]!.size;
      if (next === last && range.start < end) {
        next = i;
        skip = range.start - offset;
      }
      if (range.end <= end) {
        last = i + 1;
        break;
      }
      offset = end;
    }
    want = Math.max(0, range.end - range.start);
  }
  const ahead: Promise<Buffer>[] = [];
  let size = 0;
  let sent = 0;
  const fill = () => {
    while (ahead.length < ctx.window && next < last) {
      const p = fetchChunk(ctx, info, next++);
      p.catch(() => {}); // Observed below, in order; this only silences the early rejection.
      ahead.push(p);
    }
  };
  fill();
  while (ahead.length > 0) {
    let data = await ahead.shift()!;
    fill();
    size += data.length;
    if (range) {
      data = data.subarray(skip, skip + want - sent);
      skip = 0;
      sent += data.length;
    }
    await sink(data);
    onProgress?.(data.length);
  }
  if (!range && size !== info.size) {
    throw new DfsError("CORRUPT", `${info.path} has ${size} bytes in its chunks but is recorded as ${info.size}; nothing trustworthy was returned`);
  }
}

const inflightByUrl = new Map<string, number>();

async function fetchChunk(ctx: TransferCtx, info: FileInfo, index: number): Promise<Buffer> {
  const c = info.chunks[index]!;
  const cached = await ctx.cache.get(c.hash);
  if (cached) {
    ctx.stats.chunksFromCache++;
    return cached;
  }
  const tried = new Set<string>();
  let lastError: DfsError | undefined;
  let replicas = c.replicas;
  // The replicas the lookup named, then (when none could be read) those the directory knows now: repair
  // may have copied the chunk elsewhere, or its nodes may have come back at other addresses.
  for (let round = 0; round < 2; round++) {
    const fresh = replicas.filter((r) => !tried.has(r.url));
    const got = await fromReplicas(ctx, c, fresh, (e) => (lastError = e));
    if (got) return got;
    for (const r of fresh) tried.add(r.url);
    if (round === 0) replicas = await currentReplicas(ctx, info, index).catch(() => []);
  }
  if (tried.size === 0) {
    throw new DfsError("UNAVAILABLE", `chunk ${index} of ${info.path} has no live replica right now; try again when its nodes are back`);
  }
  throw new DfsError("UNAVAILABLE", `no replica of chunk ${index} of ${info.path} could be read (${lastError?.message ?? "none reachable"})`, { cause: lastError });
}

/** Where the directory says chunk `index` of the same version lives now. */
async function currentReplicas(ctx: TransferCtx, info: FileInfo, index: number): Promise<Replica[]> {
  const now = await ctx.directory.request<FileInfo>("dir.lookup", { path: info.path });
  return now.version === info.version && now.chunks[index]?.hash === info.chunks[index]!.hash ? now.chunks[index]!.replicas : [];
}

/** Reads a chunk from the first of `replicas` that serves it intact, least loaded first; reports bad copies. */
async function fromReplicas(ctx: TransferCtx, c: FileInfo["chunks"][number], replicas: Replica[], fail: (e: DfsError) => void): Promise<Buffer | undefined> {
  // Least-loaded replica first; ties broken at random so readers spread over the copies.
  const order = [...replicas].sort((a, b) => (inflightByUrl.get(a.url) ?? 0) - (inflightByUrl.get(b.url) ?? 0) || Math.random() - 0.5);
  for (const r of order) {
    inflightByUrl.set(r.url, (inflightByUrl.get(r.url) ?? 0) + 1);
    try {
      const reply = await ctx.pool.request<GetReply>(r.url, "store.get", { hash: c.hash }, { timeoutMs: transferTimeoutMs(c.size, 1) });
      const data = Buffer.from(reply.data.buffer, reply.data.byteOffset, reply.data.byteLength);
      if (createHash("sha256").update(data).digest("hex") !== c.hash) {
        fail(new DfsError("CORRUPT", `replica of chunk ${c.hash.slice(0, 12)} on ${r.url} is corrupt`));
        void ctx.directory.request("dir.badReplica", { hash: c.hash, node: r.node, reason: "hash mismatch on read" }).catch(() => {});
        continue;
      }
      ctx.stats.chunksFetched++;
      ctx.stats.bytesFetched += data.length;
      await ctx.cache.put(c.hash, data);
      return data;
    } catch (err) {
      const e = toDfsError(err);
      fail(e);
      ctx.log.debug("replica failed, trying next", { url: r.url, hash: c.hash, err: e.message });
      // A node that finds its own copy damaged (a log record failing its CRC) says so instead of serving it.
      if (e.code === "NOT_FOUND" || e.code === "CORRUPT") {
        void ctx.directory.request("dir.badReplica", { hash: c.hash, node: r.node, reason: e.code === "CORRUPT" ? "corrupt on read" : "missing on read" }).catch(() => {});
      }
    } finally {
      inflightByUrl.set(r.url, (inflightByUrl.get(r.url) ?? 1) - 1);
    }
  }
  return undefined;
}
