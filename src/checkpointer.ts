import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { DfsError, isErrorCode, toDfsError } from "./protocol/errors.js";
import { logger, logLevel, type Logger } from "./log.js";
import { buildCheckpoint, type Checkpointer, type CheckpointResult } from "./roles/directory/checkpoint.js";
import { DIRECTORY_SCHEMA } from "./roles/directory/schema.js";

/*
 * The directory's checkpointer runs as a process of its own (this same program with a hidden command),
 * so that building a snapshot never blocks the directory's event loop and its memory (a second copy of
 * the database while it is exported) is not the directory's. The child exits as soon as its parent is
 * gone (its stdin closes), and it installs nothing the folders already hold a newer snapshot for.
 */

/** Hidden command line of the checkpointer: `dfs directory checkpoint --gen G --dir D [--dir D2 ...]`. */
export const CHECKPOINT_COMMAND = ["directory", "checkpoint"];
/** A checkpoint of a very large directory takes minutes; one that takes longer than this is stuck. */
const CHECKPOINT_TIMEOUT_MS = 60 * 60 * 1000;

/** How to start this program again: the executable itself, or node with the same loader and entry file. */
function selfCommand(): { cmd: string; args: string[] } {
  try {
    const sea = createRequire(import.meta.url)("node:sea") as { isSea(): boolean };
    if (sea.isSea()) return { cmd: process.execPath, args: [] };
  } catch {
    // a Node without node:sea runs from source
  }
  return { cmd: process.execPath, args: [...process.execArgv, process.argv[1]!] };
}

/** Runs each checkpoint in a child process of this program. */
export function processCheckpointer(log: Logger): Checkpointer {
  return ({ dirs, gen, signal }) =>
    new Promise<CheckpointResult>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const { cmd, args } = selfCommand();
      const child = spawn(cmd, [...args, ...CHECKPOINT_COMMAND, "--gen", String(gen), ...dirs.flatMap((d) => ["--dir", d])], {
        stdio: ["pipe", "pipe", "inherit"],
        env: { ...process.env, DFS_LOG_LEVEL: logLevel() },
      });
      log.info("checkpoint-started", { gen, pid: child.pid });
      let out = "";
      child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
      child.stdin!.on("error", () => undefined);
      const kill = () => child.kill("SIGKILL");
      const timer = setTimeout(kill, CHECKPOINT_TIMEOUT_MS);
      signal?.addEventListener("abort", kill, { once: true });
      child.on("error", (err) => reject(new DfsError("INTERNAL", `checkpointer could not start: ${err.message}`, { cause: err })));
      child.on("close", (code, sig) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", kill);
        if (signal?.aborted) return reject(signal.reason);
        const last = out.trim().split("\n").at(-1) ?? "";
        let msg: { ok?: boolean; code?: string; message?: string } & Partial<CheckpointResult> = {};
        try {
          msg = JSON.parse(last);
        } catch {
          // no answer: it died
        }
        if (code === 0 && msg.ok) return resolve(msg as CheckpointResult);
        if (msg.ok === false && msg.message) return reject(new DfsError(isErrorCode(msg.code) ? msg.code : "INTERNAL", msg.message));
        reject(new DfsError("INTERNAL", `checkpointer ${sig ? `was killed by ${sig}` : `exited with ${code}`} without an answer`));
      });
    });
}

/** Body of the hidden command: build the checkpoint, print one JSON line, exit. */
export async function runCheckpointCommand(opts: { gen: number; dirs: string[] }): Promise<number> {
  const log = logger("checkpoint");
  const parentGone = new AbortController();
  // The parent holds our stdin: when it closes, the directory that asked for this checkpoint is gone.
  process.stdin.on("end", () => parentGone.abort(new DfsError("UNAVAILABLE", "the directory that asked for this checkpoint is gone")));
  process.stdin.on("error", () => undefined);
  process.stdout.on("error", () => undefined); // nobody to answer when the parent is gone
  process.stdin.resume();
  let reply: object;
  try {
    const r = await buildCheckpoint(DIRECTORY_SCHEMA, { dirs: opts.dirs, gen: opts.gen, signal: parentGone.signal }, log);
    reply = { ok: true, ...r };
  } catch (err) {
    const e = toDfsError(err);
    if (!parentGone.signal.aborted) log.error("checkpoint-failed", { gen: opts.gen, err: e });
    reply = { ok: false, code: e.code, message: e.message };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
  return "ok" in reply && reply.ok ? 0 : 1;
}
