import fs from "node:fs";
import { createRequire } from "node:module";
import initSqlJs, { type Database, type SqlJsStatic, type Statement } from "sql.js";

/**
 * Where the sql.js WebAssembly bytes come from. By default the file shipped in the sql.js package;
 * a single-executable build swaps this for a reader of its embedded asset. Returning undefined lets
 * sql.js find the wasm file by itself.
 */
let wasmLoader: () => Uint8Array | undefined = defaultWasmLoader;
let loaded: Promise<SqlJsStatic> | undefined;

function defaultWasmLoader(): Uint8Array {
  const file = createRequire(import.meta.url).resolve("sql.js/dist/sql-wasm.wasm");
  return fs.readFileSync(file);
}

/** Replaces the wasm loader. Must be called before the first {@link loadSqlJs}; later calls have no effect on an already-loaded module. */
export function setSqlWasmLoader(fn: () => Uint8Array | undefined): void {
  wasmLoader = fn;
}

/** Initialises sql.js once per process; every caller shares the same module. A failed load is retried on the next call. */
export async function loadSqlJs(): Promise<SqlJsStatic> {
  if (!loaded) {
    loaded = (async () => {
      const bytes = wasmLoader();
      // Copy into a fresh ArrayBuffer: a Buffer may be a view into a shared pool.
      const wasmBinary = bytes ? new Uint8Array(bytes).buffer : undefined;
      return initSqlJs(wasmBinary ? { wasmBinary } : undefined);
    })();
    loaded.catch(() => {
      loaded = undefined;
    });
  }
  return loaded;
}

export type Param = string | number | null;
export type Row = (string | number | Uint8Array | null)[];

const statements = new WeakMap<Database, Map<string, Statement>>();

/**
 * The statement for `sql`, compiled once per database and kept for its lifetime (sql.js frees them
 * when the database closes): compiling SQL per call was what made commits and lookups slow.
 */
export function prepared(db: Database, sql: string): Statement {
  let m = statements.get(db);
  if (!m) statements.set(db, (m = new Map()));
  let st = m.get(sql);
  if (!st) m.set(sql, (st = db.prepare(sql)));
  return st;
}

/** Runs a statement that returns no rows. */
export function run(db: Database, sql: string, params: Param[] = []): void {
  prepared(db, sql).run(params);
}

/** The first row of a query, or undefined. */
export function get(db: Database, sql: string, params: Param[] = []): Row | undefined {
  const st = prepared(db, sql);
  try {
    st.bind(params);
    return st.step() ? (st.get() as Row) : undefined;
  } finally {
    st.reset();
  }
}

/** Every row of a query, read to the end before returning, so callers may run other queries per row. */
export function all(db: Database, sql: string, params: Param[] = []): Row[] {
  const st = prepared(db, sql);
  const rows: Row[] = [];
  try {
    st.bind(params);
    while (st.step()) rows.push(st.get() as Row);
  } finally {
    st.reset();
  }
  return rows;
}
