// The S3 client of the AWS SDK against the verifier, over loopback HTTP: what it really puts on the wire.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import test from "node:test";
import { DeleteObjectsCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { S3AuthError, bodyVerifier, verifySigV4, type Payload, type SignedRequest } from "../src/s3/sigv4.js";
import { AKID, SECRET, lookup } from "./helpers/s3-sign.js";

interface Seen {
  method: string;
  path: string;
  query: Array<[string, string]>;
  kind?: Payload["kind"];
  body?: Buffer;
  error?: string;
}

async function gateway(t: test.TestContext): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = http.createServer(async (req, res) => {
    const raw = req.url ?? "/";
    const q = raw.indexOf("?");
    const signed: SignedRequest = { method: req.method ?? "GET", rawPath: q < 0 ? raw : raw.slice(0, q), rawQuery: q < 0 ? "" : raw.slice(q + 1), headers: req.headersDistinct };
    const entry: Seen = { method: signed.method, path: decodeURIComponent(signed.rawPath), query: [] };
    seen.push(entry);
    try {
      const v = await verifySigV4(signed, lookup);
      entry.query = v.query;
      entry.kind = v.payload.kind;
      const parts: Buffer[] = [];
      // For keys so named, one byte of the body is changed on the way, as a faulty network or proxy would.
      let at = 0;
      const damage = async function* (src: AsyncIterable<Buffer>) {
        for await (const c of src) {
          const out = Buffer.from(c);
          if (entry.path.includes("damaged") && at <= 5000 && 5000 < at + c.length) out[5000 - at] ^= 1;
          at += c.length;
          yield out;
        }
      };
      await pipeline(req, damage, bodyVerifier(v, signed), async (src: AsyncIterable<Buffer>) => {
        for await (const c of src) parts.push(c);
      });
      entry.body = Buffer.concat(parts);
      const xml = signed.method === "POST" ? "<DeleteResult/>" : q >= 0 && signed.method === "GET" ? "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>" : undefined;
      res.writeHead(200, xml ? { "content-type": "application/xml" } : { etag: '"0"' });
      res.end(xml ?? (signed.method === "GET" ? "object" : ""));
    } catch (e) {
      entry.error = e instanceof S3AuthError ? e.code : String(e);
      res.writeHead(e instanceof S3AuthError ? e.status : 500, { connection: "close" });
      res.end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

function client(url: string, secretAccessKey = SECRET): S3Client {
  return new S3Client({ endpoint: url, forcePathStyle: true, region: "us-east-1", credentials: { accessKeyId: AKID, secretAccessKey }, maxAttempts: 1 });
}

test("the SDK's S3 client is verified for every body it sends: plain with header checksums, and aws-chunked with trailing ones", { timeout: 60_000 }, async (t) => {
  const { url, seen } = await gateway(t);
  const s3 = client(url);
  t.after(() => s3.destroy());
  const big = Buffer.alloc(150_000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
  const cases: Array<{ key: string; body: () => Buffer | string | Readable; expect: Buffer; alg?: "CRC32C" | "CRC64NVME" | "SHA1" | "SHA256"; kind: Payload["kind"] }> = [
    { key: "dir one/ключ+~é (1).txt", body: () => Buffer.from("buffer body"), expect: Buffer.from("buffer body"), kind: "sha256" },
    { key: "c32c.bin", body: () => big, expect: big, alg: "CRC32C", kind: "sha256" },
    { key: "stream.bin", body: () => Readable.from([big.subarray(0, 70_000), big.subarray(70_000)]), expect: big, kind: "streaming-unsigned-trailer" },
    { key: "crc64.bin", body: () => Readable.from([big]), expect: big, alg: "CRC64NVME", kind: "streaming-unsigned-trailer" },
    { key: "sha1.bin", body: () => Readable.from([big]), expect: big, alg: "SHA1", kind: "streaming-unsigned-trailer" },
    { key: "sha256.bin", body: () => Readable.from([big]), expect: big, alg: "SHA256", kind: "streaming-unsigned-trailer" },
  ];
  for (const c of cases) {
    await s3.send(new PutObjectCommand({ Bucket: "b", Key: c.key, Body: c.body(), ContentLength: c.expect.length, ChecksumAlgorithm: c.alg }));
    const got = seen.at(-1)!;
    assert.equal(got.error, undefined, c.key);
    assert.equal(got.path, `/b/${c.key}`);
    assert.equal(got.kind, c.kind, c.key);
    assert.equal(createHash("sha256").update(got.body!).digest("hex"), createHash("sha256").update(c.expect).digest("hex"), c.key);
  }

  await s3.send(new GetObjectCommand({ Bucket: "b", Key: "a b/c+d" }));
  assert.equal(seen.at(-1)!.error, undefined);
  assert.equal(seen.at(-1)!.path, "/b/a b/c+d");
  await s3.send(new ListObjectsV2Command({ Bucket: "b", Prefix: "dir one/a+b~ключ", StartAfter: "x/y z", Delimiter: "/" }));
  const list = seen.at(-1)!;
  assert.equal(list.error, undefined);
  assert.deepEqual(new Map(list.query).get("prefix"), "dir one/a+b~ключ");
  assert.deepEqual(new Map(list.query).get("start-after"), "x/y z");
  await s3.send(new DeleteObjectsCommand({ Bucket: "b", Delete: { Objects: [{ Key: "a" }, { Key: "b c" }] } }));
  assert.equal(seen.at(-1)!.error, undefined);
  assert.match(seen.at(-1)!.body!.toString(), /<Key>b c<\/Key>/);

  for (const [key, body, code] of [
    ["damaged.bin", () => big, "XAmzContentSHA256Mismatch"],
    ["damaged-stream.bin", () => Readable.from([big]), "BadDigest"],
  ] as const) {
    await assert.rejects(s3.send(new PutObjectCommand({ Bucket: "b", Key: key, Body: body(), ContentLength: big.length })));
    assert.equal(seen.at(-1)!.error, code, key);
  }

  const wrong = client(url, "not-the-secret");
  t.after(() => wrong.destroy());
  await assert.rejects(wrong.send(new GetObjectCommand({ Bucket: "b", Key: "k" })));
  assert.equal(seen.at(-1)!.error, "SignatureDoesNotMatch");
  await assert.rejects(wrong.send(new PutObjectCommand({ Bucket: "b", Key: "k", Body: Readable.from([big]), ContentLength: big.length })));
  assert.equal(seen.at(-1)!.error, "SignatureDoesNotMatch");
});
