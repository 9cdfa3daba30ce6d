import { parser } from "../protocol/common.js";
import { toDfsError } from "../protocol/errors.js";
import type { RegisterReply } from "../protocol/directory.js";
import { storeSchemas, type GetReply, type PutReply } from "../protocol/storage.js";
import { Actor, type Handler, type Peer } from "../transport/actor.js";
import type { Logger } from "../log.js";
import { ChunkStore } from "./storage/chunkstore.js";
import { Reporter } from "./storage/reporter.js";
import { Scrubber } from "./storage/scrubber.js";
import type { PeerPool, Upstream } from "./upstream.js";

export interface StorageInit {
  dataDir: string;
  /** This node's address, as other nodes reach it. */
  url: string;
  zone: string;
  capacity?: number;
  /** Pause between scrub passes (re-hashing every chunk); 0 = no scrubbing. Default 1 h. */
  scrubIntervalMs?: number;
}

export interface StorageComponents {
  log: Logger;
  directory: Upstream;
  peers: PeerPool;
}

export interface Storage {
  readonly actor: Actor;
  readonly nodeId: string;
  readonly chunks: ChunkStore;
  /** Registers with the directory; the link runs it on every (re)connect. */
  register(peer: Peer): Promise<void>;
  close(): Promise<void>;
}

type PutBody = ReturnType<typeof storeSchemas.put.parse>;
type CopyBody = ReturnType<typeof storeSchemas.copy.parse>;

/** The storage role: a chunk store on local disk, chain replication, reports to the directory. */
export async function createStorage(components: StorageComponents, init: StorageInit): Promise<Storage> {
  const { log, directory, peers } = components;
  const chunks = await ChunkStore.open({ dir: init.dataDir, capacity: init.capacity, log: log.child("chunks") });
  const reporter = new Reporter(directory);
  const scrubEvery = init.scrubIntervalMs ?? 3_600_000;
  const scrubber = scrubEvery > 0
    ? new Scrubber({ log: log.child("scrub"), chunks, directory, nodeId: () => chunks.nodeId }, { intervalMs: scrubEvery })
    : undefined;
  let heartbeat: NodeJS.Timeout | undefined;

  async function put(b: PutBody): Promise<PutReply> {
    const [next, ...rest] = b.chain;
    // Pipelined: the next node of the chain receives the chunk while this one writes it.
    const forwarded = next
      ? peers.request<PutReply>(next, "store.put", { hash: b.hash, data: b.data, chain: rest }, { timeoutMs: 60_000 }).then(
          (r) => r.stored,
          (err) => {
            log.warn("chain forward failed", { next, hash: b.hash, err: toDfsError(err).message });
            return [] as string[];
          },
        )
      : Promise.resolve([] as string[]);
    await chunks.put(b.hash, b.data);
    await reporter.report(b.hash, b.data.length);
    return { stored: [init.url, ...(await forwarded)] };
  }

  async function copy(b: CopyBody): Promise<{ copied: number }> {
    let copied = 0;
    for (const c of b.chunks) {
      // Asked to copy what we may already hold: our copy may be the bad one that got us delisted, so check it.
      try {
        await reporter.report(c.hash, (await chunks.get(c.hash, { verify: true })).length);
        continue;
      } catch (err) {
        const code = toDfsError(err).code;
        if (code === "CORRUPT") {
          log.warn("own copy corrupt, replacing it", { hash: c.hash });
          await chunks.delete(c.hash);
        } else if (code !== "NOT_FOUND") throw err;
      }
      for (const from of c.from) {
        try {
          const r = await peers.request<GetReply>(from, "store.get", { hash: c.hash }, { timeoutMs: 60_000 });
          await chunks.put(c.hash, r.data);
          await reporter.report(c.hash, r.data.length);
          copied++;
          break;
        } catch (err) {
          log.warn("repair source failed", { from, hash: c.hash, err: toDfsError(err).message });
        }
      }
    }
    return { copied };
  }

  const handlers: Record<string, Handler> = {
    "store.put": { allow: ["client", "storage", "directory"], parse: parser(storeSchemas.put), handle: put },
    "store.get": {
      allow: ["client", "storage", "directory"],
      parse: parser(storeSchemas.get),
      handle: async (b: { hash: string }): Promise<GetReply> => ({ data: await chunks.get(b.hash) }),
    },
    "store.has": {
      allow: ["client", "storage", "directory"],
      parse: parser(storeSchemas.has),
      handle: async (b: { hashes: string[] }) => {
        const have: string[] = [];
        for (const h of b.hashes) if (await chunks.has(h)) have.push(h);
        return { have };
      },
    },
    "store.delete": {
      allow: ["directory"],
      parse: parser(storeSchemas.delete),
      handle: async (b: { hashes: string[] }) => {
        let deleted = 0;
        for (const h of b.hashes) if (await chunks.delete(h)) deleted++;
        return { deleted };
      },
    },
    "store.copy": { allow: ["directory"], parse: parser(storeSchemas.copy), handle: copy },
  };

  const actor = new Actor({ name: "storage", prefix: "store.", concurrency: 16, capacity: 64, handlers });

  async function figures() {
    const u = chunks.usage();
    return { free: await chunks.free(), used: u.used, chunks: u.chunks };
  }

  async function register(peer: Peer): Promise<void> {
    const f = await figures();
    const reply = await peer.request<RegisterReply>("dir.register", {
      kind: "storage",
      id: chunks.nodeId,
      url: init.url,
      zone: init.zone,
      capacity: init.capacity ?? null,
      free: f.free,
      used: f.used,
      chunks: await chunks.list(),
    }, { timeoutMs: 60_000 });
    clearInterval(heartbeat);
    heartbeat = setInterval(() => {
      void figures()
        .then((fig) => (peer.closed ? undefined : peer.tell("dir.heartbeat", fig)))
        .catch((err) => log.debug("heartbeat failed", { err: toDfsError(err).message }));
    }, reply.heartbeatMs);
    heartbeat.unref();
    log.info("registered with directory", { id: chunks.nodeId, chunks: f.chunks });
  }

  log.info("storage ready", { id: chunks.nodeId, dir: init.dataDir, chunks: chunks.usage().chunks });
  let closing: Promise<void> | undefined;
  return {
    actor,
    nodeId: chunks.nodeId,
    chunks,
    register,
    close() {
      closing ??= (async () => {
        clearInterval(heartbeat);
        await scrubber?.close();
        actor.close();
        await chunks.close();
      })();
      return closing;
    },
  };
}
