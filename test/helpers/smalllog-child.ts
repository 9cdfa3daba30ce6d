/*
 * A process that writes to a chunk store until a crash point (DFS_FAULT) kills it, printing a line for
 * each operation as it starts or is acknowledged, so that the test knows what must have survived.
 * Usage: smalllog-child.ts <data dir> puts|compaction
 */
import { ChunkStore } from "../../src/roles/storage/chunkstore.js";
import { testChunk } from "./small-chunks.js";

const [dir, mode] = process.argv.slice(2);
if (!dir || (mode !== "puts" && mode !== "compaction")) throw new Error("usage: smalllog-child.ts <dir> puts|compaction");
const say = (line: string) => process.stdout.write(line + "\n"); // a pipe: written at once, so a kill loses no line

const store = await ChunkStore.open({ dir, smallLog: mode === "compaction" ? { segmentBytes: 32 * 1024, compactMinBytes: 1 } : {} });
const total = mode === "puts" ? 2000 : 200;
let next = 0;
await Promise.all(Array.from({ length: 16 }, async () => {
  while (next < total) {
    const i = next++;
    const c = testChunk(i);
    await store.put(c.hash, c.data);
    say(`put ${i}`);
  }
}));
if (mode === "compaction") {
  for (let i = 0; i < total; i++) {
    if (i % 4 === 0) continue;
    say(`deleting ${i}`);
    await store.delete(testChunk(i).hash);
    say(`deleted ${i}`);
  }
  await store.small.idle();
}
await store.close();
say("done");
