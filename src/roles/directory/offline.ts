import fs from "node:fs/promises";
import path from "node:path";
import type { Database } from "sql.js";
import { DfsError } from "../../protocol/errors.js";
import { loadReplayed, openDatabase } from "./checkpoint.js";
import { lockFolders } from "./meta-folders.js";
import { DIRECTORY_SCHEMA } from "./schema.js";

/** A stopped directory's metadata, loaded as start-up loads it, with its folders held until `close()`. */
export interface OfflineMeta {
  readonly db: Database;
  /** Records replayed on top of the snapshot. */
  readonly replayed: number;
  /** Closes the database and gives the folders back; idempotent. */
  close(): Promise<void>;
}

/**
 * Loads the metadata in `dirs` without changing it: takes the folders' LOCK (so a running directory or
 * recovery keeps it out, and it keeps them out meanwhile), replays the snapshot and journals as
 * start-up does (a torn tail is left out, as start-up cuts it), and refuses damage start-up would
 * refuse, with the same CORRUPT message pointing to `recoverHint`. Nothing is repaired or written
 * besides the LOCK file.
 */
export async function loadStoppedMeta(dirsIn: string[], recoverHint: string, doing: string): Promise<OfflineMeta> {
  const dirs = [...new Set(dirsIn.map((d) => path.resolve(d)))];
  for (const d of dirs) {
    if (!(await fs.stat(d).then((st) => st.isDirectory(), () => false))) throw new DfsError("NOT_FOUND", `no metadata folder ${d} (check --from and --meta-dir)`);
  }
  const refuse = (err: unknown) => {
    if (!(err instanceof DfsError) || err.code !== "CORRUPT") return err;
    return new DfsError("CORRUPT", `${err.message}; dfs does not ${doing} damaged metadata: run \`${recoverHint}\` first to keep every record that still applies and list what is lost`, {
      cause: err,
      details: err.details,
    });
  };
  const release = await lockFolders(dirs);
  try {
    const { db, replayed } = await loadReplayed(dirs, DIRECTORY_SCHEMA, openDatabase, refuse);
    let closed: Promise<void> | undefined;
    return {
      db,
      replayed,
      close: () =>
        (closed ??= (async () => {
          db.close();
          await release();
        })()),
    };
  } catch (err) {
    await release();
    throw err;
  }
}
