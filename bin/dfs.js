#!/usr/bin/env node
// Runs dfs from a checkout: TypeScript is compiled on the fly by tsx.
import { register } from "tsx/esm/api";
register();
const { main } = await import("../src/cli.ts");
await main(process.argv);
