/** Every fsync a node makes goes through `synced`, so that metrics can count them and time them. */
type Listener = (seconds: number) => void;

let listener: Listener | undefined;

/** Sets the one listener told of each fsync's duration (the metrics of this process). */
export function onFsync(l: Listener): void {
  listener = l;
}

export async function synced(op: Promise<void>): Promise<void> {
  const started = performance.now();
  await op;
  listener?.((performance.now() - started) / 1000);
}
