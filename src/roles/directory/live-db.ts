import type { Database, SqlJsStatic } from "sql.js";
import { openDatabase, type Schema } from "./checkpoint.js";
import { all, loadSqlJs } from "./sql.js";

/**
 * The directory's live database keeps its tables in an attached `:memory:` database, not in sql.js's
 * main database file. sql.js holds that file in one array that is copied whole each time it grows by an
 * eighth: at 1,000,000 files that is a 150-500 ms stop of the event loop every few thousand commits.
 * An in-memory database keeps its pages apart and grows without copying. Statements name tables without
 * a schema; with the main database left empty they all resolve to `live`.
 */
const LIVE = "live";

/** The module each live database came from, so that exporting one needs no await. */
const modules = new WeakMap<Database, SqlJsStatic>();

/** The database of `image` (or a new one), upgraded, with every table and index moved into `live`. */
export async function openLiveDatabase<R>(image: Uint8Array | undefined, s: Schema<R>): Promise<Database> {
  const db = await openDatabase(image, s);
  try {
    db.exec(`ATTACH ':memory:' AS ${LIVE}`);
    const objects = all(db, "SELECT type, name, sql FROM main.sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'")
      .map(([type, name, sql]) => ({ type: String(type), name: String(name), sql: String(sql) }));
    const tables = objects.filter((o) => o.type === "table");
    // Indexes after the rows: building one at the end is faster than keeping it up to date row by row.
    for (const t of tables) db.exec(qualified(t.sql, t.name));
    db.exec("BEGIN");
    for (const t of tables) db.exec(`INSERT INTO ${LIVE}."${t.name}" SELECT * FROM main."${t.name}"`);
    db.exec("COMMIT");
    for (const o of objects) if (o.type === "index") db.exec(qualified(o.sql, o.name));
    for (const t of tables) db.exec(`DROP TABLE main."${t.name}"`);
    db.exec("VACUUM main"); // gives the image's bytes back
    modules.set(db, await loadSqlJs());
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}

/** `CREATE TABLE name...` / `CREATE INDEX name ON ...` as stored by SQLite, made to create in `live`. */
function qualified(sql: string, name: string): string {
  const m = /^CREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\s+("?)/i.exec(sql);
  if (!m || !sql.slice(m[0].length - m[3].length).replace(/^"/, "").startsWith(name)) {
    throw new Error(`cannot move into the live database: ${sql.slice(0, 80)}`);
  }
  return `${sql.slice(0, m[0].length - m[3].length)}${LIVE}.${sql.slice(m[0].length - m[3].length)}`;
}

/**
 * The bytes of a database image holding what `live` holds, as `db.export()` gives for an ordinary one
 * (which must never be called on a live database: it reopens the file and so drops `live`). Synchronous,
 * so that nothing changes the database meanwhile.
 */
export function exportLive(db: Database): Uint8Array {
  const SQL = modules.get(db);
  if (!SQL) throw new Error("not a live database");
  // A second database of the same module shares its in-memory file system, so SQLite can write into its file.
  const out = new SQL.Database() as Database & { filename: string };
  try {
    db.exec(`VACUUM ${LIVE} INTO '/${out.filename}'`);
    return out.export();
  } finally {
    out.close();
  }
}
