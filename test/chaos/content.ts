import { createHash } from "node:crypto";
import { hash32, Rng } from "./rng.js";

/** What a write stores, named so that any read can tell which write it saw. */
export interface Content {
  /** Unique per distinct content; several writes may store the same content (repeated bytes share chunks). */
  id: string;
  size: number;
}

/** The bytes of a content: a header naming it, then filler derived from its id (so both ends can make them). */
export function contentBytes(c: Content): Buffer {
  const head = Buffer.from(`dfs-chaos ${c.id}\n`);
  const out = Buffer.alloc(Math.max(c.size, head.length));
  head.copy(out);
  const rng = new Rng(hash32(c.id));
  for (let i = head.length; i < out.length; i += 4) {
    const word = Math.floor(rng.next() * 4294967296);
    for (let k = 0; k < 4 && i + k < out.length; k++) out[i + k] = (word >>> (8 * k)) & 0xff;
  }
  return out;
}

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
