/** Placements remembered; older ones fold into `forgotten` (enough for any delete to arrive in time). */
const REMEMBERED = 200_000;

/**
 * Which deletes this node may carry out. Every put names the generation of its placement, every delete the
 * generation at which the directory decided it; a delete never removes a chunk stored (or re-stored) under a
 * newer placement. What this process cannot know (placements before it registered, or forgotten ones) counts
 * against the delete, so one decided before them is refused: the chunk stays, and is collected later if unused.
 */
export class DeleteGuard {
  /** hash -> newest placement generation seen for it, oldest first. */
  private readonly lastPut = new Map<string, number>();
  /** The directory's generation at this process's first registration; nothing is deleted before it. */
  private registered = Number.MAX_SAFE_INTEGER;
  /** Newest generation among the placements no longer remembered. */
  private forgotten = 0;

  setFloor(gen: number): void {
    if (this.registered === Number.MAX_SAFE_INTEGER) this.registered = gen;
  }

  /** A put or copy of `hash` under placement `gen` is about to happen. */
  note(hash: string, gen: number): void {
    const had = this.lastPut.get(hash) ?? 0;
    this.lastPut.delete(hash);
    this.lastPut.set(hash, Math.max(had, gen));
    if (this.lastPut.size > REMEMBERED) {
      const [oldest, g] = this.lastPut.entries().next().value as [string, number];
      this.lastPut.delete(oldest);
      this.forgotten = Math.max(this.forgotten, g);
    }
  }

  mayDelete(hash: string, gen: number): boolean {
    return gen > this.registered && gen > this.forgotten && gen > (this.lastPut.get(hash) ?? 0);
  }
}
