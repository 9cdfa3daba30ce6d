import { createHash } from "node:crypto";

/** The i-th chunk of a crash test: 1 KiB that both the writing child and the checking test can make. */
export function testChunk(i: number): { hash: string; data: Buffer } {
  const seed = createHash("sha256").update(`small chunk ${i}`).digest();
  const data = Buffer.concat(Array.from({ length: 32 }, () => seed));
  return { hash: createHash("sha256").update(data).digest("hex"), data };
}
