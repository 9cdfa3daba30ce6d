import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";

/** Replaces a small file atomically and durably: temp file, fsync, rename, fsync of the folder. */
export async function writeFileDurable(file: string, data: string | Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  await fs.mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomUUID()}.tmp`);
  const fh = await fs.open(tmp, "wx", 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, file);
  const d = await fs.open(dir, "r");
  try {
    await d.sync();
  } finally {
    await d.close();
  }
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
