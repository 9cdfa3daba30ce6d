#!/usr/bin/env node
// Entry of the dfs program: every role, `certs` and `local` start here.
import { main } from "./cli.js";

void main(process.argv);
