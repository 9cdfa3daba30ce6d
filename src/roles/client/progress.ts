import cliProgress from "cli-progress";
import type { Writable } from "node:stream";

export interface Bar {
  add(n: number): void;
  stop(): void;
}

/** Shown only on a terminal and for transfers worth watching (8 MiB or more, or of unknown size). */
export function progressBar(stream: Writable & { isTTY?: boolean }, label: string, total: number | undefined): Bar {
  if (!stream.isTTY || (total !== undefined && total < 8 * 1024 * 1024)) return { add() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: `${label} [{bar}] {percentage}% {done}/{size} MiB {speed} MiB/s eta {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  const mib = (n: number) => (n / 1048576).toFixed(1);
  const started = Date.now();
  let done = 0;
  let stopped = false;
  bar.start(total ?? 0, 0, { done: mib(0), size: total === undefined ? "?" : mib(total), speed: "0" });
  return {
    add(n) {
      done += n;
      const secs = Math.max(0.001, (Date.now() - started) / 1000);
      bar.update(done, { done: mib(done), speed: (done / 1048576 / secs).toFixed(1) });
    },
    stop() {
      if (stopped) return;
      stopped = true;
      bar.stop();
    },
  };
}
