import { transferTimeoutMs, storeSchemas, type DeleteReply, type GetReply, type PutReply, type VerifyReply } from "../../protocol/storage.js";
import { parser } from "../../protocol/common.js";
import { toDfsError } from "../../protocol/errors.js";
import type { Handler } from "../../transport/actor.js";
import type { Logger } from "../../log.js";
import type { PeerPool } from "../upstream.js";
import type { ChunkStore } from "./chunkstore.js";
import type { RunnerEpoch } from "./epoch.js";
import type { DeleteGuard } from "./gens.js";
import type { Reporter } from "./reporter.js";
import { Streams } from "./streams.js";

type PutBody = ReturnType<typeof storeSchemas.put.parse>;
type CopyBody = ReturnType<typeof storeSchemas.copy.parse>;
type DeleteBody = ReturnType<typeof storeSchemas.delete.parse>;

export interface StorageHandlerComponents {
  log: Logger;
  chunks: ChunkStore;
  reporter: Reporter;
  guard: DeleteGuard;
  epoch: RunnerEpoch;
  peers: PeerPool;
  /** This node's address, as the chain names it. */
  url: string;
}

/**
 * The storage role's messages: chunk put (chain replication, whole or streamed in pieces), get, has, verify,
 * guarded delete, repair copy.
 */
export function storageHandlers(c: StorageHandlerComponents): Record<string, Handler> {
  const { log, chunks, reporter, guard, epoch, peers } = c;

  async function put(b: PutBody): Promise<PutReply> {
    guard.note(b.hash, b.gen);
    const [next, ...rest] = b.chain;
    // Pipelined: the next node of the chain receives the chunk while this one writes it.
    const forwarded = next
      ? peers.request<PutReply>(next, "store.put", { hash: b.hash, gen: b.gen, chain: rest, data: b.data }, { timeoutMs: transferTimeoutMs(b.data.length, b.chain.length) }).then(
          (r) => r.stored,
          (err) => {
            log.warn("chain forward failed", { next, hash: b.hash, err: toDfsError(err).message });
            return [] as string[];
          },
        )
      : Promise.resolve([] as string[]);
    await chunks.put(b.hash, b.data);
    await reporter.report(b.hash, b.data.length, b.gen);
    return { stored: [c.url, ...(await forwarded)] };
  }

  async function copy(b: CopyBody): Promise<{ copied: number }> {
    await epoch.admit(b.epoch, "store.copy");
    let copied = 0;
    for (const ch of b.chunks) {
      guard.note(ch.hash, b.gen);
      // Asked to copy what we may already hold: our copy may be the bad one that got us delisted, so check it.
      try {
        await reporter.report(ch.hash, (await chunks.get(ch.hash, { verify: true })).length, b.gen);
        continue;
      } catch (err) {
        const code = toDfsError(err).code;
        if (code === "CORRUPT") {
          log.warn("own copy corrupt, replacing it", { hash: ch.hash });
          await chunks.delete(ch.hash);
        } else if (code !== "NOT_FOUND") throw err;
      }
      for (const from of ch.from) {
        try {
          const r = await peers.request<GetReply>(from, "store.get", { hash: ch.hash }, { timeoutMs: 60_000 });
          await chunks.put(ch.hash, r.data);
          await reporter.report(ch.hash, r.data.length, b.gen);
          copied++;
          break;
        } catch (err) {
          log.warn("repair source failed", { from, hash: ch.hash, err: toDfsError(err).message });
        }
      }
    }
    return { copied };
  }

  async function remove(b: DeleteBody): Promise<DeleteReply> {
    await epoch.admit(b.epoch, "store.delete");
    const deleted: string[] = [];
    const kept: string[] = [];
    for (const h of b.hashes) {
      // Checked once no put of the chunk is under way: a put noted before then wins.
      if (await chunks.delete(h, { unless: () => !guard.mayDelete(h, b.gen) })) deleted.push(h);
      else if (!guard.mayDelete(h, b.gen)) kept.push(h);
    }
    if (kept.length) log.info("deletes refused: chunks placed again since, or ordered before this process started", { kept: kept.length });
    return { deleted, kept };
  }

  async function verify(b: { hash: string }): Promise<VerifyReply> {
    try {
      await chunks.get(b.hash, { verify: true });
      return { state: "ok" };
    } catch (err) {
      const code = toDfsError(err).code;
      if (code === "NOT_FOUND") return { state: "missing" };
      if (code === "CORRUPT") return { state: "corrupt" };
      throw err;
    }
  }

  const any = ["client", "storage", "directory"];
  return {
    "store.put": { allow: any, parse: parser(storeSchemas.put), handle: put },
    ...new Streams({ log, chunks, reporter, guard, peers, url: c.url }).handlers(),
    "store.get": {
      allow: any,
      parse: parser(storeSchemas.get),
      handle: async (b: { hash: string }): Promise<GetReply> => ({ data: await chunks.get(b.hash) }),
    },
    "store.has": {
      allow: any,
      parse: parser(storeSchemas.has),
      handle: async (b: { hashes: string[] }) => {
        const have: string[] = [];
        for (const h of b.hashes) if (await chunks.has(h)) have.push(h);
        return { have };
      },
    },
    "store.verify": { allow: ["directory"], parse: parser(storeSchemas.verify), handle: verify },
    "store.delete": { allow: ["directory"], parse: parser(storeSchemas.delete), handle: remove },
    "store.copy": { allow: ["directory"], parse: parser(storeSchemas.copy), handle: copy },
  };
}
