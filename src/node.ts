#!/usr/bin/env node
// Entry of the dfs program: every role, `certs` and `local` start here.
import { main } from "./cli.js";
import { useSeaAssets } from "./sea.js";

// fsync and file writes run on libuv's thread pool; the default 4 threads would let only 4 of a
// storage node's concurrent chunk writes reach the disk at once, and the file system merges
// concurrent fsyncs into one journal commit. Set before the pool's first use, which is later.
process.env.UV_THREADPOOL_SIZE ??= "16";
useSeaAssets();
void main(process.argv);
