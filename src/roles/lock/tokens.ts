import fs from "node:fs/promises";
import { writeFileDurable } from "../durable-file.js";

const BLOCK = 1000;

/**
 * Fencing tokens that only grow, also across restarts: a ceiling is written durably before any token
 * below it is handed out, and a restart continues above the last ceiling (skipping at most one block).
 */
export class TokenSource {
  private next = 1;
  private ceiling = 0;

  private constructor(private readonly file: string) {}

  static async open(file: string): Promise<TokenSource> {
    const t = new TokenSource(file);
    try {
      const saved = Number((await fs.readFile(file, "utf8")).trim());
      if (Number.isSafeInteger(saved) && saved > 0) t.next = t.ceiling = saved;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    return t;
  }

  /** Synchronous while the reserved block lasts, so a serial caller gets tokens in order. */
  take(): number | Promise<number> {
    if (this.next < this.ceiling) return this.next++;
    return this.reserve().then(() => this.next++);
  }

  private async reserve(): Promise<void> {
    const ceiling = this.next + BLOCK;
    await writeFileDurable(this.file, String(ceiling) + "\n");
    this.ceiling = ceiling;
  }
}
