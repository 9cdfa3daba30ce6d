import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { synced } from "../fsyncs.js";

/** Makes a folder's entries (new, renamed or removed names) durable. */
export async function syncDir(dir: string): Promise<void> {
  let d: fs.FileHandle | undefined;
  try {
    d = await fs.open(dir, "r");
    await synced(d.sync());
  } catch (err) {
    // Some platforms and file systems refuse to fsync a folder; nothing more can be done there.
    if (!["EISDIR", "EINVAL", "EPERM", "EBADF"].includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
  } finally {
    await d?.close();
  }
}

/** Writes `data` to a new file (by default one that must not exist yet) and fsyncs it. */
export async function writeSynced(file: string, data: string | Uint8Array | Uint8Array[], flag = "wx"): Promise<void> {
  const fh = await fs.open(file, flag, 0o644);
  try {
    if (Array.isArray(data)) await fh.writev(data);
    else await fh.writeFile(data);
    await synced(fh.sync());
  } finally {
    await fh.close();
  }
}

/** Writes all of `data` at `position`: a file write may take less than it was given. */
export async function writeAt(fh: fs.FileHandle, data: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < data.length;) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Replaces a small file atomically and durably: temp file, fsync, rename, fsync of the folder. */
export async function writeFileDurable(file: string, data: string | Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  await fs.mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomUUID()}.tmp`);
  await writeSynced(tmp, data);
  await fs.rename(tmp, file);
  await syncDir(dir);
}

/** A node id kept in `file`: made once, the same on every later start. */
export async function persistentId(file: string): Promise<string> {
  try {
    const id = (await fs.readFile(file, "utf8")).trim();
    if (/^[A-Za-z0-9._-]{1,64}$/.test(id)) return id;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const id = randomUUID();
  await writeFileDurable(file, id + "\n");
  return id;
}
