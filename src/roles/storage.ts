import { Actor, type Peer } from "../transport/actor.js";
import type { Logger } from "../log.js";
import { ChunkStore } from "./storage/chunkstore.js";
import { RunnerEpoch } from "./storage/epoch.js";
import { DeleteGuard } from "./storage/gens.js";
import { storageHandlers } from "./storage/handlers.js";
import { Registration } from "./storage/registration.js";
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

/** The storage role: a chunk store on local disk, chain replication, reports to the directory. */
export async function createStorage(components: StorageComponents, init: StorageInit): Promise<Storage> {
  const { log, directory, peers } = components;
  const chunks = await ChunkStore.open({ dir: init.dataDir, capacity: init.capacity, log: log.child("chunks") });
  const guard = new DeleteGuard();
  const epoch = await RunnerEpoch.open({ log }, init);
  const reporter = new Reporter(directory);
  const registration = await Registration.open({ log, chunks, guard }, init);
  const scrubEvery = init.scrubIntervalMs ?? 3_600_000;
  const scrubber = scrubEvery > 0
    ? new Scrubber({ log: log.child("scrub"), chunks, directory, nodeId: () => chunks.nodeId }, { intervalMs: scrubEvery })
    : undefined;
  const handlers = storageHandlers({ log, chunks, reporter, guard, epoch, peers, url: init.url });
  // A writer keeps up to window x PIECE_WINDOW pieces (16 by default) and a close per chunk held at a node of
  // its chains until the rest of the chain wrote them: 256 leaves room for about a dozen writers whose chains
  // all pass through this node before any is answered BUSY. A held piece is at most 1 MiB, so a full mailbox
  // holds no more data than the 64 whole 4 MiB chunks this bound was first set for.
  const actor = new Actor({ name: "storage", prefix: "store.", concurrency: 16, capacity: 256, handlers });

  log.info("storage ready", { id: chunks.nodeId, dir: init.dataDir, chunks: chunks.usage().chunks });
  let closing: Promise<void> | undefined;
  return {
    actor,
    nodeId: chunks.nodeId,
    chunks,
    register: (peer) => registration.register(peer),
    close() {
      closing ??= (async () => {
        registration.close();
        await scrubber?.close();
        actor.close();
        await chunks.close();
      })();
      return closing;
    },
  };
}
