import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { loadCerts } from "./certs/load.js";
import { startNode, type RunningNode } from "./host.js";
import { logger } from "./log.js";
import { DfsError } from "./protocol/errors.js";
import { DfsClient, runClient } from "./roles/client.js";
import { isLoopback, type HttpAddress } from "./observe/address.js";

export interface LocalInit {
  storage: number;
  dataDir: string;
  replicas: number;
  /** One client command to run instead of the REPL. */
  command: string[];
  /** Where the status page and the metrics of every node (and the client) are served. */
  http?: HttpAddress;
  /** Where an S3 gateway serves (plain HTTP on loopback, HTTPS elsewhere), with a key kept in the data folder. */
  s3?: HttpAddress;
}

/**
 * `dfs local`: a directory, a lock service and N storage nodes in this process on free loopback
 * ports, certificates made on first run, and the client on top. Returns the client's exit code.
 */
export async function runLocal(init: LocalInit): Promise<number> {
  const certDir = path.join(init.dataDir, "certs");
  if (!existsSync(path.join(certDir, "ca.crt"))) await (await import("./certs/generate.js")).initCerts({ dir: certDir });
  const host = "127.0.0.1";
  const common = {
    host, port: 0, directoryUrls: [], replicas: init.replicas, minReplicas: init.replicas,
    deadAfterMs: 30_000, chunkSize: 4 * 1024 * 1024, zone: "",
  };
  const nodes: RunningNode[] = [];
  const closeAll = async () => {
    for (const n of nodes.reverse()) await n.close();
  };
  // One set of metrics for the whole process, served with the directory's status page.
  const observe = init.http ? await import("./observe/metrics.js") : undefined;
  const metrics = observe ? new observe.Metrics() : undefined;
  try {
    const dir = await startNode({
      ...common, roles: ["directory"], dataDir: path.join(init.dataDir, "directory"), tls: loadCerts(certDir, "directory"), label: "directory",
      ...(init.http ? { http: { address: init.http }, metrics } : {}),
    });
    nodes.push(dir);
    const withDir = { ...common, directoryUrls: [dir.url], metrics };
    nodes.push(await startNode({ ...withDir, roles: ["lock"], dataDir: path.join(init.dataDir, "lock"), tls: loadCerts(certDir, "lock"), label: "lock" }));
    for (let i = 1; i <= init.storage; i++) {
      nodes.push(await startNode({
        ...withDir, roles: ["storage"], dataDir: path.join(init.dataDir, `storage-${i}`), tls: loadCerts(certDir, "storage"), label: `storage-${i}`,
      }));
    }
    const s3 = init.s3 ? await startLocalGateway(init, init.s3, certDir, dir.url) : undefined;
    if (s3) nodes.push(s3.node);
    if (init.command.length === 0 && process.stdin.isTTY) {
      process.stderr.write(`local cluster: directory ${dir.url}, lock, ${init.storage} storage nodes; data in ${init.dataDir}\n`);
      if (s3) process.stderr.write(`s3: ${s3.url} (key ${s3.key.id}, secret ${s3.key.secret}; also in ${s3.keyFile})\n`);
      if (dir.httpUrl) process.stderr.write(`status page: ${dir.httpUrl}/ (metrics at ${dir.httpUrl}/metrics)\n`);
    }
    if (dir.httpUrl) logger("local").info("status page", { url: dir.httpUrl });
    return await runClient({
      directoryUrls: [dir.url],
      tls: loadCerts(certDir, "client"),
      cacheDir: path.join(init.dataDir, "cache"),
      log: logger("client"),
      command: init.command,
      ready: async (client) => {
        if (metrics) (await import("./observe/role-metrics.js")).clientMetrics(metrics, client.stats);
        await waitForNodes(client, init.storage);
      },
      io: { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, cwd: workingFolder(), interactive: false },
    });
  } finally {
    await closeAll();
  }
}

/**
 * The S3 gateway of `dfs local --s3`, with an access key for every bucket made on the first run and kept in the
 * data folder beside the certificates (it opens the same data they do).
 */
async function startLocalGateway(init: LocalInit, address: HttpAddress, certDir: string, directoryUrl: string) {
  const tls = loadCerts(certDir, "client");
  const keyFile = path.join(init.dataDir, "s3-key.json");
  let key: { id: string; secret: string };
  if (existsSync(keyFile)) {
    key = JSON.parse(readFileSync(keyFile, "utf8")) as typeof key;
  } else {
    const client = new DfsClient({ directoryUrls: [directoryUrl], tls, cacheDir: path.join(init.dataDir, "cache"), log: logger("local") });
    try {
      await client.connect();
      const made = await client.s3Keys.add(["*"]);
      key = { id: made.id, secret: made.secret };
      writeFileSync(keyFile, JSON.stringify(key) + "\n", { mode: 0o600 });
    } finally {
      await client.close();
    }
  }
  const { startGateway } = await import("./s3/gateway.js");
  const gw = await startGateway({
    host: address.host, port: address.port, tls, directoryUrls: [directoryUrl], dataDir: path.join(init.dataDir, "s3"),
    insecureLoopback: isLoopback(address.host), log: logger("s3"),
  });
  logger("local").info("s3 gateway", { url: gw.url, key: key.id, keyFile });
  return { url: gw.url, key, keyFile, node: { close: () => gw.close() } as RunningNode };
}

/** Waits until the lock service and every storage node have registered, so the first command finds them. */
async function waitForNodes(client: DfsClient, storage: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const s = await client.status();
    const up = (role: string) => s.nodes.filter((n) => n.role === role && n.state === "up").length;
    if (up("storage") >= storage && up("lock") >= 1) return;
    if (Date.now() > deadline) throw new DfsError("UNAVAILABLE", `only ${up("storage")} of ${storage} storage nodes registered in time; see dfs.log`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Under `npm start` the script runs in the package folder; local file names mean the folder npm was started in. */
function workingFolder(): string {
  return (process.env.npm_lifecycle_event && process.env.INIT_CWD) || process.cwd();
}
