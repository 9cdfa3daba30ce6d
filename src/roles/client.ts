import os from "node:os";
import path from "node:path";
import { DfsError, toDfsError } from "../protocol/errors.js";
import type { TlsMaterial } from "../transport/tls.js";
import type { Logger } from "../log.js";
import { DfsClient } from "./client/client.js";
import { runCommand, type Io } from "./client/commands.js";
import { repl } from "./client/repl.js";

export { DfsClient } from "./client/client.js";
export type { ClientInit, ClusterStatus, WriteOptions } from "./client/client.js";
export type { S3Keys } from "./client/s3keys.js";

export interface ClientRun {
  /** Addresses of the directory (one or more). */
  directoryUrls: readonly string[];
  tls: TlsMaterial;
  cacheDir?: string;
  cacheBytes?: number;
  log: Logger;
  /** Words of a one-shot command; empty = REPL. */
  command: string[];
  io: Io;
  /** Runs after connecting and before the first command (e.g. to wait for a fresh cluster's nodes). */
  ready?: (client: DfsClient) => Promise<void>;
}

/** Default cache folder: $XDG_CACHE_HOME/dfs, else ~/.cache/dfs. */
export function defaultCacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "dfs");
}

/**
 * The client role as people use it: one command and an exit code, or the REPL.
 * Returns the exit code; errors are one line on stderr.
 */
export async function runClient(run: ClientRun): Promise<number> {
  const client = new DfsClient({
    directoryUrls: run.directoryUrls,
    tls: run.tls,
    cacheDir: run.cacheDir ?? defaultCacheDir(),
    cacheBytes: run.cacheBytes,
    log: run.log,
    onNotice: (message) => void run.io.stderr.write(`warning: ${message}\n`),
  });
  try {
    if (run.command.length > 0) {
      if (run.command[0] === "help") {
        await runCommand(client, run.command, run.io);
        return 0;
      }
      await client.connect();
      await run.ready?.(client);
      await runCommand(client, run.command, run.io);
      return 0;
    }
    await client
      .connect()
      .then(() => run.ready?.(client))
      .catch((err: DfsError) => run.io.stderr.write(`warning: ${err.message}\n`));
    const failures = await repl(client, { ...run.io, interactive: true }, {
      historyFile: path.join(os.homedir(), ".dfs_history"),
      remoteNames: async () => (await client.ls("/")).map((e) => e.path),
    });
    return failures > 0 ? 1 : 0;
  } catch (err) {
    run.io.stderr.write(`dfs: ${toDfsError(err).message}\n`);
    return 1;
  } finally {
    await client.close();
  }
}
