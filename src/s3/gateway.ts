import path from "node:path";
import { DfsError, toDfsError } from "../protocol/errors.js";
import type { Logger } from "../log.js";
import { DfsClient } from "../roles/client.js";
import type { TlsMaterial } from "../transport/tls.js";
import { isLoopback } from "../observe/address.js";
import type { KeyScope } from "./context.js";
import { startS3Server, type KeySource } from "./server.js";

export interface GatewayInit {
  host: string;
  port: number;
  /** The node's client certificate: the gateway is a client of the cluster, and serves HTTPS with it. */
  tls: TlsMaterial;
  directoryUrls: readonly string[];
  /** The gateway's chunk cache lives here. */
  dataDir: string;
  /** Plain HTTP, allowed only on a loopback address (tests, a proxy in front). */
  insecureLoopback?: boolean;
  log: Logger;
}

export interface Gateway {
  readonly url: string;
  close(): Promise<void>;
}

/** How long a key read from the directory is trusted before it is read again (a removed key stops working within this). */
const KEY_TTL_MS = 10_000;

/** Access keys from the directory, kept for a few seconds: every request needs its key's secret. */
class DirectoryKeys implements KeySource {
  private readonly cache = new Map<string, { at: number; key?: KeyScope & { secret: string } }>();

  constructor(private readonly client: DfsClient) {}

  async get(id: string): Promise<(KeyScope & { secret: string }) | undefined> {
    const hit = this.cache.get(id);
    if (hit && Date.now() - hit.at < KEY_TTL_MS) return hit.key;
    let key: (KeyScope & { secret: string }) | undefined;
    try {
      key = await this.client.s3Keys.get(id);
    } catch (err) {
      if (toDfsError(err).code !== "NOT_FOUND") throw err;
    }
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(id, { at: Date.now(), key });
    return key;
  }
}

/** `dfs --role s3`: an S3 endpoint in front of the cluster, through one client of its own. */
export async function startGateway(init: GatewayInit): Promise<Gateway> {
  if (init.insecureLoopback && !isLoopback(init.host)) {
    throw new DfsError("BAD_REQUEST", `--s3-insecure-loopback serves plain HTTP, which is allowed only on a loopback address (not ${init.host})`);
  }
  const client = new DfsClient({ directoryUrls: init.directoryUrls, tls: init.tls, cacheDir: path.join(init.dataDir, "cache"), log: init.log.child("client") });
  await client.connect();
  try {
    const server = await startS3Server({
      host: init.host, port: init.port, tls: init.insecureLoopback ? undefined : init.tls, client, keys: new DirectoryKeys(client), log: init.log,
    });
    init.log.info("s3 gateway ready", { url: server.url });
    return {
      url: server.url,
      close: async () => {
        await server.close();
        await client.close();
      },
    };
  } catch (err) {
    await client.close();
    throw err;
  }
}
