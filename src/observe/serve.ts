import type { Logger } from "../log.js";
import type { DirectoryView } from "../roles/directory.js";
import type { LockService } from "../roles/lock.js";
import type { Storage } from "../roles/storage.js";
import type { Router } from "../transport/actor.js";
import type { TlsMaterial } from "../transport/tls.js";
import { directoryApi } from "./api.js";
import { History } from "./history.js";
import type { HttpAddress } from "./address.js";
import { startHttp } from "./http.js";
import { Metrics } from "./metrics.js";
import { directoryMetrics, lockMetrics, storageMetrics } from "./role-metrics.js";

export interface HttpOptions {
  address: HttpAddress;
  tokenFile?: string;
  metricsOpen?: boolean;
}

export interface ObservedNode {
  /** The node's own address, the label that tells nodes of one process apart. */
  url: string;
  router: Router;
  directory?: DirectoryView;
  lock?: LockService;
  storage?: Storage;
  log: Logger;
}

/** Counts a node's requests and reads its roles' figures into `metrics`; returns what to stop at close. */
export function observeNode(metrics: Metrics, node: ObservedNode): { api?: ReturnType<typeof directoryApi>; close(): void } {
  metrics.observe(node.router);
  if (node.lock) lockMetrics(metrics, node.url, node.lock);
  if (node.storage) storageMetrics(metrics, node.url, node.storage);
  if (!node.directory) return { close: () => {} };
  directoryMetrics(metrics, node.directory);
  const history = new History(node.directory);
  return { api: directoryApi(node.directory, history), close: () => history.close() };
}

/** `--http`: the node's metrics (in `metrics` when the process shares one set) and, on a directory, the status page. */
export async function serveNode(node: ObservedNode, http: HttpOptions, tls: TlsMaterial, metrics = new Metrics()): Promise<{ url: string; close(): Promise<void> }> {
  const observed = observeNode(metrics, node);
  try {
    const server = await startHttp({ ...http, tls, metrics, api: observed.api, log: node.log.child("http") });
    return {
      url: server.url,
      close: async () => {
        observed.close();
        await server.close();
      },
    };
  } catch (err) {
    observed.close();
    throw err;
  }
}
