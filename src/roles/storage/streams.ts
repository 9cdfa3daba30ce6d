import { createHash, type Hash } from "node:crypto";
import fs from "node:fs/promises";
import type { z } from "zod";
import { parser } from "../../protocol/common.js";
import { DfsError, toDfsError } from "../../protocol/errors.js";
import { MAX_PIECES_AHEAD, STREAM_IDLE_MS, storeSchemas, type PutReply } from "../../protocol/storage.js";
import type { Handler, Peer } from "../../transport/actor.js";
import { later } from "../../transport/mailbox.js";
import type { Logger } from "../../log.js";
import type { PeerPool } from "../upstream.js";
import type { ChunkStore, TempChunk } from "./chunkstore.js";
import { writeAt } from "../durable-file.js";
import { Downstream } from "./forward.js";
import type { DeleteGuard } from "./gens.js";
import type { Reporter } from "./reporter.js";
import { synced } from "../../fsyncs.js";

type OpenBody = z.output<typeof storeSchemas.open>;
type PieceBody = z.output<typeof storeSchemas.piece>;
type StreamBody = z.output<typeof storeSchemas.close>;

/** Streams one connection may have open at once: each claims disk room and a file, so a peer gets a bound. */
const MAX_STREAMS_PER_PEER = 256;

export interface StreamComponents {
  log: Logger;
  chunks: ChunkStore;
  reporter: Reporter;
  guard: DeleteGuard;
  peers: PeerPool;
  /** This node's address, as the chain names it. */
  url: string;
}

interface Piece {
  offset: number;
  data: Uint8Array;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** One chunk arriving in pieces from one connection. */
interface InStream {
  readonly key: string;
  readonly id: number;
  readonly peer: Peer;
  readonly head: OpenBody;
  /** Opening: temp file not ready yet. Closing: all bytes in, being checked and made durable. */
  state: "opening" | "open" | "closing" | "done" | "gone";
  reason?: DfsError;
  /** The room claimed and the temp file, once `ready` settled. */
  temp?: TempChunk;
  file?: fs.FileHandle;
  ready: Promise<void>;
  readonly hasher: Hash;
  /** Offset of the next byte to apply: everything before it was hashed and queued for writing. */
  next: number;
  /** Pieces that arrived before one they follow. */
  readonly ahead: Map<number, Piece>;
  /** Local writes, one after the other, in offset order. */
  writes: Promise<void>;
  /** Every piece handed downstream, acknowledged or dropped. */
  forwards: Promise<void>;
  down?: Downstream;
  /** Pieces applied and not yet answered: while any is, the stream waits on us or downstream, not on its sender. */
  busy: number;
  timer?: NodeJS.Timeout;
}

/**
 * Chunks that arrive as streams of pieces (`store.open`, `store.piece`, `store.close`, `store.abort`).
 * Each piece is hashed and written to the stream's temp file as it comes, and forwarded to the next node of
 * the chain at once; it is answered when written here and there. Pieces are applied in offset order,
 * whatever order the actor's concurrent handlers see them in. A stream whose connection closes, or that
 * receives nothing for {@link STREAM_IDLE_MS} while it owes no answer, is abandoned: temp file removed,
 * room given back, downstream aborted.
 */
export class Streams {
  private readonly streams = new Map<string, InStream>();
  private readonly byPeer = new Map<number, Set<InStream>>();

  constructor(private readonly c: StreamComponents) {}

  handlers(): Record<string, Handler> {
    const any = ["client", "storage", "directory"];
    return {
      "store.open": { allow: any, parse: parser(storeSchemas.open), handle: (b: OpenBody, peer: Peer) => this.open(b, peer) },
      "store.piece": { allow: any, parse: parser(storeSchemas.piece), handle: (b: PieceBody, peer: Peer) => this.piece(b, peer) },
      "store.close": { allow: any, parse: parser(storeSchemas.close), handle: (b: StreamBody, peer: Peer) => this.close(b, peer) },
      "store.abort": { allow: any, parse: parser(storeSchemas.abort), handle: (b: StreamBody, peer: Peer) => this.abort(b, peer) },
    };
  }

  private async open(b: OpenBody, peer: Peer): Promise<{ stream: number }> {
    const key = `${peer.id}:${b.stream}`;
    if (this.streams.has(key)) throw new DfsError("BAD_REQUEST", `stream ${b.stream} is already open on this connection`);
    const mine = this.peerStreams(peer);
    if (mine.size >= MAX_STREAMS_PER_PEER) throw new DfsError("BUSY", `this connection already has ${MAX_STREAMS_PER_PEER} streams open; close some first`);
    this.c.guard.note(b.hash, b.gen);
    const s: InStream = {
      key, id: b.stream, peer, head: b, state: "opening", ready: Promise.resolve(), hasher: createHash("sha256"),
      next: 0, ahead: new Map(), writes: Promise.resolve(), forwards: Promise.resolve(), busy: 0,
    };
    this.streams.set(key, s);
    mine.add(s);
    s.ready = (async () => {
      s.temp = await this.c.chunks.reserveTemp(b.hash, b.size);
      s.file = await fs.open(s.temp.path, "wx", 0o644);
    })();
    try {
      await s.ready;
    } catch (err) {
      const e = diskError(err);
      this.drop(s, e);
      throw e;
    }
    if (s.state !== "opening") throw s.reason ?? new DfsError("UNAVAILABLE", `stream ${b.stream} was abandoned while opening`);
    s.state = "open";
    const [next, ...rest] = b.chain;
    if (next) s.down = new Downstream(this.c.peers, next, { hash: b.hash, gen: b.gen, size: b.size, chain: rest }, this.c.log);
    this.touch(s);
    return { stream: b.stream };
  }

  private piece(b: PieceBody, peer: Peer): unknown {
    const s = this.find(peer, b.stream);
    if (s.state !== "open") throw new DfsError("BAD_REQUEST", `stream ${b.stream} takes no pieces now (${s.state === "opening" ? "its open is not answered yet" : "it is closing"})`);
    const end = b.offset + b.data.length;
    if (end > s.head.size) this.refuse(s, `piece [${b.offset}, ${end}) of stream ${b.stream} runs past the ${s.head.size} bytes it announced`);
    const overlaps = b.offset < s.next || [...s.ahead.values()].some((p) => b.offset < p.offset + p.data.length && p.offset < end);
    if (overlaps) this.refuse(s, `piece at offset ${b.offset} of stream ${b.stream} overlaps bytes already received (next expected at ${s.next})`);
    if (b.offset > s.next && s.ahead.size >= MAX_PIECES_AHEAD) {
      this.refuse(s, `piece at offset ${b.offset} of stream ${b.stream} is more than ${MAX_PIECES_AHEAD} pieces ahead of offset ${s.next}`);
    }
    const answered = new Promise((resolve, reject) => s.ahead.set(b.offset, { offset: b.offset, data: b.data, resolve, reject }));
    for (let p = s.ahead.get(s.next); p; p = s.ahead.get(s.next)) {
      s.ahead.delete(p.offset);
      this.apply(s, p);
    }
    this.touch(s);
    // The mailbox slot is free at once; the answer (and the piece's place in the mailbox) waits for the writes.
    return later(answered);
  }

  private apply(s: InStream, p: Piece): void {
    s.next += p.data.length;
    s.hasher.update(p.data);
    s.busy++;
    const written = (s.writes = s.writes.then(() => {
      if (s.state === "gone") throw s.reason;
      return writeAt(s.file!, p.data, p.offset);
    }));
    const forwarded = s.down ? s.down.piece(p.offset, p.data) : Promise.resolve();
    s.forwards = s.forwards.then(() => forwarded);
    Promise.all([written, forwarded]).then(
      () => p.resolve({}),
      (err) => {
        const e = s.reason ?? diskError(err);
        this.drop(s, e);
        p.reject(e);
      },
    ).finally(() => {
      s.busy--;
      this.touch(s);
    });
  }

  private close(b: StreamBody, peer: Peer): unknown {
    const s = this.find(peer, b.stream);
    if (s.state !== "open") throw new DfsError("BAD_REQUEST", `stream ${b.stream} cannot be closed now (${s.state === "opening" ? "its open is not answered yet" : "it is closing already"})`);
    if (s.next !== s.head.size) this.refuse(s, `stream ${b.stream} was closed after ${s.next} of the ${s.head.size} bytes it announced`);
    s.state = "closing";
    clearTimeout(s.timer);
    return later(this.finish(s));
  }

  /** All bytes are in: check, make durable, put in place, report, and add what downstream stored. */
  private async finish(s: InStream): Promise<PutReply> {
    const { hash, size, gen } = s.head;
    try {
      if (s.hasher.digest("hex") !== hash) {
        throw new DfsError("CORRUPT", `stream ${s.id}: the data does not match its hash ${hash}`, { details: { hash } });
      }
      const downstream = s.down ? s.forwards.then(() => s.down!.close()) : Promise.resolve([]);
      await s.writes;
      await synced(s.file!.sync());
      await s.file!.close();
      s.file = undefined;
      await this.c.chunks.adopt(hash, s.temp!);
      await this.c.reporter.report(hash, size, gen);
      this.forget(s);
      s.state = "done";
      return { stored: [this.c.url, ...(await downstream)] };
    } catch (err) {
      const e = diskError(err);
      this.drop(s, e);
      throw e;
    }
  }

  private abort(b: StreamBody, peer: Peer): { aborted: boolean } {
    const s = this.streams.get(`${peer.id}:${b.stream}`);
    // Too late once closing: the chunk is being made durable, and its sender stopped waiting for it anyway.
    if (!s || s.state === "closing") return { aborted: false };
    this.drop(s, new DfsError("CANCELLED", `stream ${b.stream} was aborted by its sender`));
    return { aborted: true };
  }

  private find(peer: Peer, stream: number): InStream {
    const s = this.streams.get(`${peer.id}:${stream}`);
    if (!s) throw new DfsError("BAD_REQUEST", `no stream ${stream} on this connection (never opened, finished, or abandoned)`);
    return s;
  }

  /** Bad input ends the stream: it cannot be completed correctly any more. */
  private refuse(s: InStream, message: string): never {
    const e = new DfsError("BAD_REQUEST", message);
    this.drop(s, e);
    throw e;
  }

  private peerStreams(peer: Peer): Set<InStream> {
    let mine = this.byPeer.get(peer.id);
    if (!mine) {
      const set = (mine = new Set());
      this.byPeer.set(peer.id, set);
      peer.onClose(() => {
        this.byPeer.delete(peer.id);
        const gone = new DfsError("UNAVAILABLE", `the sender of the stream (${peer.name}) went away`);
        // A closing stream is finished all the same: its bytes are all here, and a stored chunk does no harm.
        for (const s of set) if (s.state === "opening" || s.state === "open") this.drop(s, gone);
      });
    }
    return mine;
  }

  /** (Re)starts the idle clock, which runs only while the stream waits on its sender. */
  private touch(s: InStream): void {
    clearTimeout(s.timer);
    if (s.state !== "open" || s.busy > 0) return;
    s.timer = setTimeout(() => {
      this.drop(s, new DfsError("TIMEOUT", `stream ${s.id} from ${s.peer.name} received nothing for ${STREAM_IDLE_MS / 1000} s`));
    }, STREAM_IDLE_MS);
    s.timer.unref();
  }

  private forget(s: InStream): void {
    clearTimeout(s.timer);
    if (this.streams.get(s.key) === s) this.streams.delete(s.key);
    this.byPeer.get(s.peer.id)?.delete(s);
  }

  /** Abandons a stream: pieces waiting are refused, downstream is aborted, the temp file and its room go. */
  private drop(s: InStream, reason: DfsError): void {
    if (s.state === "gone" || s.state === "done") return;
    s.state = "gone";
    s.reason = reason;
    this.forget(s);
    for (const p of s.ahead.values()) p.reject(reason);
    s.ahead.clear();
    s.down?.abort();
    this.c.log.info("stream abandoned", { stream: s.id, peer: s.peer.name, hash: s.head.hash, received: s.next, size: s.head.size, why: reason.message });
    void this.cleanup(s);
  }

  private async cleanup(s: InStream): Promise<void> {
    try {
      await s.ready.catch(() => undefined);
      await s.writes.catch(() => undefined);
      await s.file?.close().catch(() => undefined);
      s.file = undefined;
      if (s.temp) await fs.rm(s.temp.path, { force: true });
    } catch (err) {
      this.c.log.warn("temp file of an abandoned stream could not be removed", { path: s.temp?.path, err: toDfsError(err).message });
    } finally {
      s.temp?.release();
    }
  }
}

function diskError(err: unknown): DfsError {
  if ((err as NodeJS.ErrnoException | undefined)?.code === "ENOSPC") return new DfsError("NO_SPACE", "disk full", { cause: err });
  return toDfsError(err);
}
