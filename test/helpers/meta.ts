import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { TestContext } from "node:test";
import type { Database } from "sql.js";
import { DfsError } from "../../src/protocol/errors.js";
import type { Logger } from "../../src/log.js";
import { openMetaStore, type MetaStore, type MetaStoreInit } from "../../src/roles/directory/metastore.js";
import { scanJournal } from "../../src/roles/directory/journal-format.js";

/** A tiny schema for the metadata store's tests: a key-value table. */
export type Rec = { k: string; v?: number; add?: number; conflict?: boolean; path?: string; to?: string; needs?: string };

export const SCHEMA = "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)";

/** Records with this key are refused while `poison.on` is set: a schema that changed its mind between runs. */
export const poison = { on: false };

export function apply(db: Database, rec: Rec): void {
  if (rec.k === "poison" && poison.on) throw new DfsError("CONFLICT", "poison is refused now");
  if (rec.needs !== undefined && db.exec("SELECT 1 FROM kv WHERE k = ?", [rec.needs]).length === 0) {
    throw new DfsError("NOT_FOUND", `${rec.k} needs ${rec.needs}`);
  }
  if (rec.add !== undefined) {
    db.run("INSERT INTO kv(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = v + excluded.v", [rec.k, rec.add]);
    return;
  }
  db.run("INSERT INTO kv(k, v) VALUES(?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v", [rec.k, rec.v ?? 0]);
  if (rec.conflict) throw new DfsError("CONFLICT", `refused ${rec.k}`); // after a write, to prove the rollback
}

export function capture(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const mk = (c: string): Logger => {
    const at = (level: string) => (event: string, fields?: Record<string, unknown>) =>
      void lines.push(`${level} ${c} ${event} ${JSON.stringify(fields ?? {}, (_k, v) => (v instanceof Error ? v.message : v))}`);
    return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error"), child: (x) => mk(`${c}:${x}`) };
  };
  return { log: mk("test"), lines };
}

export function tempDir(t: TestContext, prefix = "dfs-metastore-"): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export type OpenExtra = Partial<Omit<MetaStoreInit<Rec>, "schema" | "apply">>;

export async function open(t: TestContext, dirs: string | string[], extra: OpenExtra = {}): Promise<MetaStore<Rec>> {
  const store = await openMetaStore<Rec>({ dirs: typeof dirs === "string" ? [dirs] : dirs, schema: SCHEMA, apply, log: capture().log, ...extra });
  t.after(() => store.close());
  return store;
}

/** Opening must fail with CORRUPT; returns the error. */
export async function refused(dirs: string | string[], extra: OpenExtra = {}): Promise<DfsError> {
  try {
    const s = await openMetaStore<Rec>({ dirs: typeof dirs === "string" ? [dirs] : dirs, schema: SCHEMA, apply, log: capture().log, ...extra });
    await s.close();
  } catch (err) {
    if (err instanceof DfsError && err.code === "CORRUPT") return err;
    throw err;
  }
  throw new Error("the store opened on damaged metadata");
}

export function get(db: Database, k: string): number | undefined {
  const r = db.exec("SELECT v FROM kv WHERE k = ?", [k]);
  return r.length ? Number(r[0]!.values[0]![0]) : undefined;
}

export function count(db: Database): number {
  return Number(db.exec("SELECT count(*) FROM kv")[0]!.values[0]![0]);
}

export const journals = (dir: string) => fs.readdirSync(dir).filter((n) => /^journal\.\d+$/.test(n)).sort();

/** Offsets of the intact records of a journal file. */
export function recordOffsets(file: string): { offset: number; end: number }[] {
  return scanJournal(fs.readFileSync(file)).records.map((r) => ({ offset: r.offset, end: r.end }));
}

/** Flips one byte of a file in place. */
export function flip(file: string, at: number): void {
  const buf = fs.readFileSync(file);
  buf[at]! ^= 0xff;
  fs.writeFileSync(file, buf);
}
