/**
 * The S3 section: the gateway (`dfs --role s3`, from the built executable when there is one) in front of the
 * bench's cluster, driven by the AWS SDK for JavaScript from the bench process: one large object put and got,
 * then 1 KiB objects from concurrent clients, beside the native client's figures of the same run.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { cpuByGroup, cpuSince, dfsBinary, readVm, ROOT, startDfs, type BenchCluster } from "./cluster.js";
import { dropPageCache, makeFile, type OpFigure } from "./workloads.js";

const MiB = 1024 * 1024;

export interface S3Result {
  size: number;
  put: { MiBs: number; cpuMsPerMiB: Record<string, number> };
  get: { MiBs: number; cpuMsPerMiB: Record<string, number> };
  gatewayPeakRss: number;
  small: { count: number; clients: number; put: OpFigure; get: OpFigure };
}

async function dfsOnce(args: string[]): Promise<string> {
  const bin = dfsBinary();
  const [cmd, argv] = bin ? [bin, args] : [process.execPath, ["--import", "tsx", path.join(ROOT, "src/node.ts"), ...args]];
  return (await promisify(execFile)(cmd, argv, { cwd: ROOT })).stdout;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? NaN;
}

/** `clients` loops, each doing its share of `count` operations one at a time; CPU per operation of every process but the bench. */
async function concurrent(count: number, clients: number, groups: Parameters<typeof cpuByGroup>[0], op: (i: number) => Promise<void>): Promise<OpFigure> {
  const cpu0 = cpuByGroup(groups);
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    for (let i = next++; i < count; i = next++) {
      const s = performance.now();
      await op(i);
      lat.push(performance.now() - s);
    }
  }));
  const ms = performance.now() - t0;
  lat.sort((a, b) => a - b);
  return {
    ops: count, errors: 0, seconds: ms / 1000, opsPerSec: count / (ms / 1000), p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99),
    cpuMsPerOp: cpuSince(groups, cpu0, count),
  };
}

export async function s3Section(cluster: BenchCluster, o: { size: number; count: number; clients: number }, progress: (s: string) => void): Promise<S3Result> {
  const key = JSON.parse(await dfsOnce(["s3", "keys", "add", "--json", "--directory", cluster.dirUrls.join(","), "--certs", cluster.certs])) as { id: string; secret: string };
  const gw = await startDfs("s3", [
    "--role", "s3", "--port", "0", "--s3-insecure-loopback", "--data", path.join(cluster.root, "s3"), "--certs", cluster.certs, "--directory", cluster.dirUrls.join(","),
  ], cluster.logs);
  const s3 = new S3Client({
    endpoint: gw.url, region: "us-east-1", forcePathStyle: true, maxAttempts: 1,
    credentials: { accessKeyId: key.id, secretAccessKey: key.secret },
  });
  try {
    await s3.send(new CreateBucketCommand({ Bucket: "bench" }));
    const file = path.join(cluster.root, "s3-large.bin");
    progress(`s3: making ${(o.size / MiB).toFixed(0)} MiB of random data`);
    await makeFile(file, o.size);
    const groups = { gateway: [gw.child], directory: cluster.directories, storage: cluster.storage };
    progress("s3: PutObject of the large object");
    let cpu0 = cpuByGroup(groups);
    let t0 = performance.now();
    await s3.send(new PutObjectCommand({ Bucket: "bench", Key: "large.bin", Body: fs.createReadStream(file), ContentLength: o.size }));
    const put = { MiBs: o.size / MiB / ((performance.now() - t0) / 1000), cpuMsPerMiB: cpuSince(groups, cpu0, o.size / MiB) };
    fs.rmSync(file, { force: true });
    dropPageCache();
    progress(`s3: PutObject ${put.MiBs.toFixed(1)} MiB/s; GetObject`);
    cpu0 = cpuByGroup(groups);
    t0 = performance.now();
    const body = (await s3.send(new GetObjectCommand({ Bucket: "bench", Key: "large.bin" }))).Body as NodeJS.ReadableStream;
    let got = 0;
    for await (const piece of body) got += (piece as Buffer).length;
    if (got !== o.size) throw new Error(`GetObject returned ${got} bytes of ${o.size}`);
    const get = { MiBs: o.size / MiB / ((performance.now() - t0) / 1000), cpuMsPerMiB: cpuSince(groups, cpu0, o.size / MiB) };
    progress(`s3: GetObject ${get.MiBs.toFixed(1)} MiB/s; ${o.count} × 1 KiB objects, ${o.clients} clients`);
    // Distinct contents, as in the native phase: equal ones would be stored once.
    const smallPut = await concurrent(o.count, o.clients, groups, async (i) => void await s3.send(new PutObjectCommand({ Bucket: "bench", Key: `small/${i}`, Body: randomBytes(1024) })));
    const smallGet = await concurrent(o.count, o.clients, groups, async (i) => {
      const r = await s3.send(new GetObjectCommand({ Bucket: "bench", Key: `small/${i}` }));
      await r.Body!.transformToByteArray();
    });
    progress(`s3: 1 KiB PutObject ${smallPut.opsPerSec.toFixed(0)}/s, GetObject ${smallGet.opsPerSec.toFixed(0)}/s`);
    return { size: o.size, put, get, gatewayPeakRss: readVm(gw.child.pid).hwm, small: { count: o.count, clients: o.clients, put: smallPut, get: smallGet } };
  } finally {
    s3.destroy();
    await gw.child.stop();
  }
}
