import { PIECE_SIZE, PIECE_WINDOW, type PutReply } from "../../protocol/storage.js";
import { PieceSender, type StreamHead } from "../piece-sender.js";
import type { PeerPool } from "../upstream.js";

/**
 * Stores a chunk larger than a piece on the chain that starts at `url`, as a stream of pieces: at most
 * {@link PIECE_WINDOW} unanswered at once, each answered once the whole rest of the chain wrote it, so the
 * nodes pass pieces on while later ones are still on their way. The pieces are views of `data`: nothing
 * beyond the chunk itself is held. Fails with the first piece's error (by offset), the node's own
 * rather than what followed from it.
 */
export async function chainPut(pool: PeerPool, url: string, head: Omit<StreamHead, "size">, data: Uint8Array): Promise<PutReply> {
  const sender = new PieceSender(pool, url, { ...head, size: data.length });
  try {
    await sender.opened;
    const unanswered = new Set<Promise<void>>();
    let failed: { offset: number; err: unknown } | undefined;
    for (let offset = 0; offset < data.length && !failed; offset += PIECE_SIZE) {
      const at = offset;
      const sent: Promise<void> = sender.piece(at, data.subarray(at, at + PIECE_SIZE)).then(
        () => void unanswered.delete(sent),
        (err) => {
          unanswered.delete(sent);
          if (!failed || at < failed.offset) failed = { offset: at, err };
        },
      );
      unanswered.add(sent);
      if (unanswered.size >= PIECE_WINDOW) await Promise.race(unanswered);
    }
    await Promise.all(unanswered);
    if (failed) throw failed.err;
    return await sender.close();
  } catch (err) {
    sender.abort();
    throw err;
  }
}
