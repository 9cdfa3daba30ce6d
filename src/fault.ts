/*
 * Crash points for tests. Some crashes matter only between two steps of a durable write (after a write and
 * before its fsync, after a compaction's copies and before the old segment goes): no test can hit those from
 * outside by timing. DFS_FAULT=<point>[@n] makes the process kill itself with SIGKILL the n-th time (default:
 * the first) it passes the point of that name. Read once at start, so an unset variable costs one comparison.
 */
const spec = /^([a-z0-9-]+)(?:@(\d+))?$/.exec(process.env.DFS_FAULT ?? "");
const point = spec?.[1];
let remaining = spec ? Number(spec[2] ?? 1) : 0;

export function crashPoint(name: string): void {
  if (name !== point || remaining <= 0) return;
  if (--remaining === 0) process.kill(process.pid, "SIGKILL");
}
