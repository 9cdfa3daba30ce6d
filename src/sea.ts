import { createRequire } from "node:module";
import { setSqlWasmLoader } from "./roles/directory/sql.js";

/** The parts of `node:sea` dfs uses (Node >= 20.12). */
interface SeaModule {
  isSea(): boolean;
  getAsset(key: string): ArrayBuffer;
}

/**
 * When running as the single executable (`npm run build:bin`), reads sql.js's wasm from the
 * asset embedded in the executable instead of from node_modules. Does nothing under tsx or
 * plain Node, and on a Node without `node:sea`.
 */
export function useSeaAssets(): void {
  let sea: SeaModule;
  try {
    sea = createRequire(import.meta.url)("node:sea") as SeaModule;
    if (!sea.isSea()) return;
  } catch {
    return;
  }
  setSqlWasmLoader(() => new Uint8Array(sea.getAsset("sql-wasm.wasm")));
}
