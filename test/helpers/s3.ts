import https from "node:https";
import path from "node:path";
import type { TestContext } from "node:test";
import { S3Client } from "@aws-sdk/client-s3";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import fs from "node:fs";
import { runDfs, spawnDfs, tmpDir, waitFor, type Cluster, type Proc } from "./cluster.js";

export interface S3Key {
  id: string;
  secret: string;
}

/** An access key made with `dfs s3 keys add`, for `buckets` (none: all). */
export async function addKey(t: TestContext, c: Cluster, buckets: string[] = []): Promise<S3Key> {
  const r = await runDfs(t, ["s3", "keys", "add", "--directory", c.directoryArg, "--certs", c.certs, "--json", ...buckets.flatMap((b) => ["--bucket", b])]);
  if (r.code !== 0) throw new Error(`s3 keys add failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as S3Key;
}

/** Starts `dfs --role s3` against the cluster; plain HTTP on loopback unless `https`. */
export async function startGateway(t: TestContext, c: Cluster, opts: { https?: boolean } = {}): Promise<{ proc: Proc; url: string }> {
  const proc = spawnDfs(t, [
    "--role", "s3", "--port", "0", "--data", path.join(tmpDir(t), "gateway"), "--certs", c.certs, "--directory", c.directoryArg,
    ...(opts.https ? [] : ["--s3-insecure-loopback"]),
  ]);
  const m = await waitFor(() => /listening on (https?:\/\/\S+)/.exec(proc.stdout), "the gateway's listening line", 60_000, 20);
  return { proc, url: m[1]! };
}

/** An AWS SDK client for the gateway: path-style addressing, and the cluster CA trusted for HTTPS. */
export function s3Client(url: string, key: S3Key, certs?: string): S3Client {
  return new S3Client({
    endpoint: url,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: key.id, secretAccessKey: key.secret },
    maxAttempts: 1,
    ...(certs ? { requestHandler: new NodeHttpHandler({ httpsAgent: new https.Agent({ ca: fs.readFileSync(path.join(certs, "ca.crt")) }) }) } : {}),
  });
}
