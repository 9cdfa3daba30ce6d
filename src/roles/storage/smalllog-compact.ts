import fs from "node:fs/promises";
import path from "node:path";
import { crashPoint } from "../../fault.js";
import { PUT, TOMBSTONE, scanSegment, segmentName } from "./smalllog-format.js";
import type { SmallLog } from "./smalllog.js";

/**
 * Compacts one sealed segment: its live records are appended again to the active segment through the
 * ordinary durable path, then the segment file is removed. Until the copies are durable the old file stays,
 * so a crash at any point loses nothing; replay then meets some chunks in two segments, and the later wins.
 *
 * Tombstones: a tombstone in segment T is needed as long as a put of its hash may remain in a segment older
 * than T, which replay would otherwise bring back. Which older segments hold such a put is not tracked (a
 * compaction that crashed may have left a second copy anywhere older), so the rule is: a tombstone is dropped
 * when T is the oldest segment left, or when the hash is in the index again (its newer put comes after the
 * tombstone and wins anyway); otherwise it is copied forward with the live puts and counted as live.
 *
 * A tombstone whose chunk is being put again at that moment (queued, not yet durable, so not in the index)
 * can be neither dropped (the put may still fail) nor copied (the copy would land after the put and delete
 * it on replay): the compaction is put off until that put settles ("later").
 *
 * "stuck", leaving the segment in place, when a live record in it is damaged: its chunk cannot be copied,
 * and the scrubber's report of it must come first.
 */
export async function compactSegment(sl: SmallLog, seq: number): Promise<"done" | "stuck" | "later"> {
  const file = path.join(sl.dir, segmentName(seq));
  const buf = await fs.readFile(file);
  const scan = scanSegment(buf, seq);
  const intact = new Set(scan.records.filter((r) => r.type === PUT).map((r) => r.offset));
  for (const [hash, e] of sl.index) {
    if (e.seg === seq && !intact.has(e.off)) {
      sl.log.warn("chunk log: segment not compacted, a live record in it is damaged", { segment: seq, hash });
      return "stuck";
    }
  }
  if (scan.records.some((r) => r.type === TOMBSTONE && sl.isPutting(r.hash))) return "later";
  const oldest = ![...sl.segments.keys()].some((s) => s < seq);
  // Queued in one synchronous pass: a delete that comes later queues its tombstone after these copies.
  const copies: Promise<void>[] = [];
  for (const r of scan.records) {
    const rec = buf.subarray(r.offset, r.end);
    if (r.type === PUT) {
      const e = sl.index.get(r.hash);
      if (!e || e.seg !== seq || e.off !== r.offset) continue;
      copies.push(sl.appendRaw(rec).then((at) => sl.moved(r.hash, e, { ...at, len: e.len })));
    } else if (!oldest && !sl.index.has(r.hash)) {
      copies.push(sl.appendRaw(rec).then((at) => sl.keptTombstone(at)));
    }
  }
  const settled = await Promise.allSettled(copies);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failed) throw failed.reason;
  crashPoint("smalllog-mid-compaction");
  await sl.dropSegment(seq);
  sl.log.info("chunk log segment compacted", { segment: seq, copied: copies.length, freed: buf.length });
  return "done";
}
