/**
 * A bench worker process: `node --import tsx bench/worker.ts MODE 'CONFIG-JSON'`.
 * It speaks to the bench on stdout with `@@ {json}` lines (logs go to stderr) and, for the
 * small-file mode, takes `go PHASE` / `exit` lines on stdin.
 *
 * Modes: idle (the bare runtime's footprint), sink (a wss+mTLS endpoint for the transport baseline),
 * large-write, large-read, small (N DfsClient instances in this process).
 */
import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { loadCerts } from "../src/certs/index.js";
import { logger, setLogLevel } from "../src/log.js";
import { DfsClient } from "../src/roles/client/client.js";
import { Actor, Router } from "../src/transport/actor.js";
import { listen } from "../src/transport/server.js";
import { readVm } from "./cluster.js";

setLogLevel("warn");
const log = logger("bench-worker");
const say = (msg: unknown): void => void process.stdout.write(`@@ ${JSON.stringify(msg)}\n`);

interface ClientConfig {
  /** Every directory process; each client starts at a random one. */
  dirUrls: string[];
  certs: string;
  cacheDir: string;
  cacheBytes?: number;
}

function client(cfg: ClientConfig, cacheDir = cfg.cacheDir): DfsClient {
  return new DfsClient({ directoryUrls: cfg.dirUrls, tls: loadCerts(cfg.certs, "client"), cacheDir, cacheBytes: cfg.cacheBytes, log });
}

async function sink(cfg: { certs: string }): Promise<void> {
  const router = new Router();
  // Accepts anything under t.* and answers null: no echo, so only one direction carries the bytes.
  router.add(new Actor({
    name: "sink", prefix: "t.", concurrency: 64, capacity: 100_000,
    handlers: { "t.sink": { allow: ["client"], parse: (b) => b, handle: () => null } },
  }));
  const server = await listen({ host: "127.0.0.1", port: 0, tls: loadCerts(cfg.certs, "storage"), router, log });
  process.stdout.write(`listening on ${server.url}\n`);
  process.on("SIGTERM", () => void server.close().then(() => process.exit(0)));
}

async function largeWrite(cfg: ClientConfig & { file: string; remote: string }): Promise<void> {
  const c = client(cfg);
  await c.connect();
  const t0 = performance.now();
  const r = await c.write(cfg.remote, createReadStream(cfg.file, { highWaterMark: 4 * 1024 * 1024 }));
  const ms = performance.now() - t0;
  await c.close();
  say({ ms, bytes: r.size, chunks: r.chunks, vm: readVm("self"), stats: c.stats });
}

async function largeRead(cfg: ClientConfig & { remote: string }): Promise<void> {
  const c = client(cfg);
  await c.connect();
  let bytes = 0;
  const t0 = performance.now();
  // Data is counted and dropped: the figure is dfs's, not the local disk's (the cache still stores every chunk).
  await c.read(cfg.remote, async (d) => void (bytes += d.length));
  const ms = performance.now() - t0;
  await c.close();
  say({ ms, bytes, vm: readVm("self"), stats: c.stats });
}

interface SmallConfig extends ClientConfig {
  /** Clients in this process, and the global index of the first. */
  clients: number;
  first: number;
  /** Clients over all worker processes. */
  total: number;
  sets: { name: string; count: number; size: number }[];
  lsPerClient: number;
}

/** File i of a set belongs to client i % total; its path carries the owner so ls has a folder per client. */
const filePath = (set: string, owner: number, i: number) => `/small/${set}/c${String(owner).padStart(2, "0")}/f${String(i).padStart(6, "0")}`;

async function small(cfg: SmallConfig): Promise<void> {
  const clients = Array.from({ length: cfg.clients }, (_, k) => client(cfg, path.join(cfg.cacheDir, `c${cfg.first + k}`)));
  await Promise.all(clients.map((c) => c.connect()));
  const base = randomBytes(Math.max(...cfg.sets.map((s) => s.size)));
  const nonce = randomBytes(8);
  const owned = (set: { count: number }, g: number) => {
    const out: number[] = [];
    for (let i = g; i < set.count; i += cfg.total) out.push(i);
    return out;
  };
  /** Runs op over items on every client at once (each client one op at a time); per-op latency in ms. */
  const phase = async (items: (g: number) => number[], op: (c: DfsClient, g: number, i: number) => Promise<void>) => {
    const lat: number[] = [];
    let errors = 0;
    let firstError: string | undefined;
    await Promise.all(clients.map(async (c, k) => {
      const g = cfg.first + k;
      for (const i of items(g)) {
        const t0 = performance.now();
        try {
          await op(c, g, i);
          lat.push(performance.now() - t0);
        } catch (err) {
          errors++;
          firstError ??= (err as Error).message;
        }
      }
    }));
    return { lat: lat.map((x) => Math.round(x * 1000) / 1000), errors, firstError };
  };
  say({ ready: true });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, name] = line.trim().split(/\s+/);
    if (cmd === "exit") break;
    if (cmd !== "go") continue;
    const [kind, setName] = name!.split(":");
    const set = cfg.sets.find((s) => s.name === setName) ?? cfg.sets[0]!;
    let result;
    if (kind === "write") {
      result = await phase((g) => owned(set, g), async (c, g, i) => {
        const data = Buffer.from(base.subarray(0, set.size));
        nonce.copy(data, 0);
        data.writeUInt32LE(i, 8); // distinct content per file: no chunk is deduplicated
        await c.write(filePath(set.name, g, i), [data]);
      });
    } else if (kind === "read") {
      // Each client reads its neighbour's files, so nothing comes from its own cache.
      result = await phase((g) => owned(set, (g + 1) % cfg.total), async (c, g, i) => {
        let n = 0;
        await c.read(filePath(set.name, (g + 1) % cfg.total, i), async (d) => void (n += d.length));
        if (n !== set.size) throw new Error(`read ${n} bytes, expected ${set.size}`);
      });
    } else if (kind === "stat") {
      result = await phase((g) => owned(set, g), async (c, g, i) => void (await c.stat(filePath(set.name, g, i))));
    } else if (kind === "lock") {
      result = await phase((g) => owned(set, g), async (c, g, i) => {
        await c.lock(filePath(set.name, g, i));
        await c.unlock(filePath(set.name, g, i));
      });
    } else if (kind === "ls") {
      result = await phase(() => Array.from({ length: cfg.lsPerClient }, (_, i) => i), async (c, g) => {
        const entries = await c.ls(path.posix.dirname(filePath(set.name, g, 0)) + "/");
        if (entries.length === 0) throw new Error("ls returned nothing");
      });
    } else {
      result = { error: `unknown phase ${name}` };
    }
    say({ phase: name, ...result });
  }
  await Promise.all(clients.map((c) => c.close()));
  say({ done: true, vm: readVm("self") });
}

async function main(): Promise<void> {
  const [mode, json] = process.argv.slice(2);
  const cfg = JSON.parse(json ?? "{}");
  switch (mode) {
    case "idle":
      return say({ vm: readVm("self") });
    case "sink":
      return sink(cfg);
    case "large-write":
      return largeWrite(cfg);
    case "large-read":
      return largeRead(cfg);
    case "small":
      return small(cfg);
    default:
      throw new Error(`unknown worker mode ${mode}`);
  }
}

main().then(
  () => {
    if (process.argv[2] !== "sink") process.exit(0);
  },
  (err) => {
    say({ error: (err as Error).stack ?? String(err) });
    process.exit(1);
  },
);
