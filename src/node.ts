#!/usr/bin/env node
// Entry of the dfs program: every role, `certs` and `local` start here.
import { main } from "./cli.js";
import { useSeaAssets } from "./sea.js";

useSeaAssets();
void main(process.argv);
