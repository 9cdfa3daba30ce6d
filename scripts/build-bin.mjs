#!/usr/bin/env node
// Builds dist/dfs: one Linux executable (Node's single executable application support) that runs
// dfs on a machine without Node. Steps: bundle src/node.ts to one CommonJS file with esbuild, make a
// SEA blob holding it and sql.js's wasm, then inject the blob into a copy of this Node binary.
// Run with `npm run build:bin`; needs only what `npm ci` installed.
import { execFileSync, spawnSync } from "node:child_process";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const dist = path.join(root, "dist");
const out = {
  bundle: path.join(dist, "dfs.cjs"),
  config: path.join(dist, "sea-config.json"),
  blob: path.join(dist, "sea-prep.blob"),
  bin: path.join(dist, "dfs"),
  // Injected under another name and renamed when done, so dist/dfs is never a half-made file.
  partial: path.join(dist, "dfs.partial"),
};
const require = createRequire(import.meta.url);
const started = Date.now();
const step = (what) => process.stdout.write(`build:bin: ${what} (${((Date.now() - started) / 1000).toFixed(1)}s)\n`);

if (process.platform !== "linux") throw new Error(`build:bin makes a Linux executable; this is ${process.platform}`);
fs.mkdirSync(dist, { recursive: true });

// Optional native addons: ws and msgpackr try to load them and fall back to pure JS when the load
// throws. A single executable cannot load .node files from node_modules, so each becomes a module
// that throws, and the bundle never looks for them on disk.
const NATIVE = ["bufferutil", "utf-8-validate", "msgpackr-extract"];
const noNativeAddons = {
  name: "no-native-addons",
  setup(build) {
    const filter = new RegExp(`^(${NATIVE.map((n) => n.replace(/[-/]/g, "\\$&")).join("|")})(/.*)?$`);
    build.onResolve({ filter }, (args) => ({ path: args.path, namespace: "no-native-addon" }));
    build.onLoad({ filter: /.*/, namespace: "no-native-addon" }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is left out of the dfs executable`)});`,
      loader: "js",
    }));
  },
};

step("bundling src/node.ts");
await esbuild.build({
  entryPoints: [path.join(root, "src/node.ts")],
  outfile: out.bundle,
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20",
  // esbuild empties import.meta in CommonJS output; supply the URL of the running file instead.
  // In a single executable __filename is the executable's path.
  define: { "import.meta.url": "__dfs_import_meta_url" },
  // "use strict" first: the bundled ES modules were strict, and a banner line would demote esbuild's own directive.
  banner: { js: '"use strict";\nvar __dfs_import_meta_url = require("node:url").pathToFileURL(__filename).href;' },
  plugins: [noNativeAddons],
  legalComments: "none",
  logLevel: "warning",
});

step("writing the SEA blob");
const wasm = require.resolve("sql.js/dist/sql-wasm.wasm");
fs.writeFileSync(out.config, JSON.stringify({
  main: out.bundle,
  output: out.blob,
  disableExperimentalSEAWarning: true,
  useSnapshot: false,
  useCodeCache: false,
  assets: { "sql-wasm.wasm": wasm },
}, null, 2) + "\n");
execFileSync(process.execPath, ["--experimental-sea-config", out.config], { cwd: root, stdio: "inherit" });

step(`injecting into a copy of ${process.execPath}`);
fs.rmSync(out.partial, { force: true });
fs.copyFileSync(process.execPath, out.partial);
fs.chmodSync(out.partial, 0o755);
const postject = path.join(path.dirname(require.resolve("postject/package.json")), "dist/cli.js");
const injected = spawnSync(process.execPath, [postject, out.partial, "NODE_SEA_BLOB", out.blob, "--sentinel-fuse", "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2"], {
  cwd: root,
  encoding: "utf8",
});
// postject's ELF reader warns once per note section of Node's binary; those lines mean nothing.
const noise = /^warning: Can't find string offset for section name/;
const said = `${injected.stdout}\n${injected.stderr}`
  .replace(/\x1b\[[0-9;]*m/g, "")
  .split("\n")
  .filter((l) => l.trim() && !noise.test(l));
if (injected.error) throw injected.error;
if (injected.status !== 0) throw new Error(`postject failed (${injected.status ?? injected.signal}):\n${said.join("\n")}`);
if (said.length > 0) process.stdout.write(said.map((l) => `  ${l}\n`).join(""));
fs.chmodSync(out.partial, 0o755);
fs.renameSync(out.partial, out.bin);

const size = fs.statSync(out.bin).size;
step(`wrote ${path.relative(root, out.bin)}, ${(size / 1024 / 1024).toFixed(1)} MiB`);
