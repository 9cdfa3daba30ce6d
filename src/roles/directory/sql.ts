import fs from "node:fs";
import { createRequire } from "node:module";
import initSqlJs, { type SqlJsStatic } from "sql.js";

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
