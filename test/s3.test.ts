import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { Readable } from "node:stream";
import test from "node:test";
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CopyObjectCommand, CreateBucketCommand, CreateMultipartUploadCommand,
  DeleteBucketCommand, DeleteObjectCommand, DeleteObjectsCommand, GetBucketVersioningCommand, GetObjectAclCommand, GetObjectCommand, GetObjectTaggingCommand, HeadBucketCommand,
  HeadObjectCommand, ListBucketsCommand, ListMultipartUploadsCommand, ListObjectsCommand, ListObjectsV2Command, ListPartsCommand,
  PutBucketVersioningCommand, PutObjectCommand, PutObjectTaggingCommand, S3ServiceException, UploadPartCommand, UploadPartCopyCommand, type S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { freeAddress, ROOT, startCluster, tmpDir, waitFor } from "./helpers/cluster.js";
import { addKey, s3Client, startGateway } from "./helpers/s3.js";
import { sdkSigner } from "./helpers/s3-sign.js";

const md5 = (b: Buffer) => createHash("md5").update(b).digest("hex");

async function bytes(s3: S3Client, Bucket: string, Key: string, Range?: string): Promise<Buffer> {
  const r = await s3.send(new GetObjectCommand({ Bucket, Key, Range }));
  return Buffer.from(await r.Body!.transformToByteArray());
}

/** The S3 error code a call fails with (for an answer without a body, such as 304, its HTTP status). */
async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof S3ServiceException, String(err));
    return err.name === "Unknown" || err.name === "NotModified" ? String(err.$metadata.httpStatusCode) : err.name;
  }
  assert.fail("the call succeeded");
}

test("the S3 API through the AWS SDK: buckets, objects, listings, copies, multipart, errors", async (t) => {
  const c = await startCluster(t);
  const key = await addKey(t, c);
  const gw = await startGateway(t, c);
  const s3 = s3Client(gw.url, key);
  t.after(() => s3.destroy());

  await t.test("buckets", async () => {
    await s3.send(new CreateBucketCommand({ Bucket: "photos" }));
    await s3.send(new CreateBucketCommand({ Bucket: "empty", ACL: "private" }));
    assert.equal(await code(s3.send(new CreateBucketCommand({ Bucket: "locked", ObjectLockEnabledForBucket: true }))), "NotImplemented");
    assert.equal(await code(s3.send(new CreateBucketCommand({ Bucket: "public", ACL: "public-read" }))), "NotImplemented");
    await s3.send(new HeadBucketCommand({ Bucket: "photos" }));
    assert.equal(await code(s3.send(new HeadBucketCommand({ Bucket: "nothere" }))), "NotFound");
    assert.equal(await code(s3.send(new CreateBucketCommand({ Bucket: "Bad_Name" }))), "InvalidBucketName");
    // rclone reads the versioning state before it deletes: never enabled, and turning it on is not served.
    assert.equal((await s3.send(new GetBucketVersioningCommand({ Bucket: "photos" }))).Status, undefined);
    assert.equal(await code(s3.send(new GetBucketVersioningCommand({ Bucket: "nothere" }))), "NoSuchBucket");
    assert.equal(await code(s3.send(new PutBucketVersioningCommand({ Bucket: "photos", VersioningConfiguration: { Status: "Enabled" } }))), "NotImplemented");
    const names = (await s3.send(new ListBucketsCommand({}))).Buckets!.map((b) => b.Name);
    assert.deepEqual(names, ["empty", "photos"]);
    await s3.send(new DeleteBucketCommand({ Bucket: "empty" }));
    assert.equal(await code(s3.send(new HeadBucketCommand({ Bucket: "empty" }))), "NotFound");
    assert.equal(await code(s3.send(new PutObjectCommand({ Bucket: "empty", Key: "x", Body: "x" }))), "NoSuchBucket");
  });

  const data = randomBytes(300_000);
  await t.test("put, get, head, ranges, conditions, metadata", async () => {
    const put = await s3.send(new PutObjectCommand({ Bucket: "photos", Key: "2024/cat.jpg", Body: data, ContentType: "image/jpeg", Metadata: { camera: "x100" } }));
    assert.equal(put.ETag, `"${md5(data)}"`);
    assert.deepEqual(await bytes(s3, "photos", "2024/cat.jpg"), data);
    const head = await s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "2024/cat.jpg" }));
    assert.equal(head.ContentLength, data.length);
    assert.equal(head.ContentType, "image/jpeg");
    assert.deepEqual(head.Metadata, { camera: "x100" });
    assert.equal(head.ETag, put.ETag);
    assert.deepEqual(await bytes(s3, "photos", "2024/cat.jpg", "bytes=10-19"), data.subarray(10, 20));
    assert.deepEqual(await bytes(s3, "photos", "2024/cat.jpg", "bytes=-5"), data.subarray(data.length - 5));
    assert.deepEqual(await bytes(s3, "photos", "2024/cat.jpg", "bytes=299990-"), data.subarray(299_990));
    assert.equal(await code(s3.send(new GetObjectCommand({ Bucket: "photos", Key: "2024/cat.jpg", Range: "bytes=400000-" }))), "InvalidRange");
    assert.equal(await code(s3.send(new GetObjectCommand({ Bucket: "photos", Key: "2024/cat.jpg", IfMatch: '"0123"' }))), "PreconditionFailed");
    assert.equal(await code(s3.send(new GetObjectCommand({ Bucket: "photos", Key: "2024/cat.jpg", IfNoneMatch: put.ETag }))), "304");
    assert.equal(await code(s3.send(new GetObjectCommand({ Bucket: "photos", Key: "2024/none" }))), "NoSuchKey");
    assert.equal(await code(s3.send(new GetObjectAclCommand({ Bucket: "photos", Key: "2024/cat.jpg" }))), "NotImplemented");
    // The standard headers S3 keeps come back as sent; aws-chunked (how a streamed body was framed) is no encoding of the object.
    const expires = new Date("2030-01-02T03:04:05Z");
    await s3.send(new PutObjectCommand({
      Bucket: "photos", Key: "2024/headers.txt", Body: Readable.from([Buffer.from("kept headers")]), ContentLength: 12, ChecksumAlgorithm: "CRC32",
      CacheControl: "max-age=60", ContentDisposition: 'attachment; filename="h.txt"', ContentEncoding: "gzip", ContentLanguage: "fr", Expires: expires,
    }));
    // Options the gateway would store nothing for are refused, not dropped; a private ACL and STANDARD are what it does anyway.
    await s3.send(new PutObjectCommand({ Bucket: "photos", Key: "2024/plain.txt", Body: "x", ACL: "private", StorageClass: "STANDARD" }));
    for (const extra of [{ ACL: "public-read" }, { StorageClass: "GLACIER" }, { ServerSideEncryption: "AES256" }, { GrantRead: "id=someone" }, { WebsiteRedirectLocation: "/x" }] as const) {
      assert.equal(await code(s3.send(new PutObjectCommand({ Bucket: "photos", Key: "2024/refused.txt", Body: "x", ...extra }))), "NotImplemented", JSON.stringify(extra));
    }
    assert.equal(await code(s3.send(new CreateMultipartUploadCommand({ Bucket: "photos", Key: "2024/refused.txt", ServerSideEncryption: "AES256" }))), "NotImplemented");
    assert.equal(await code(s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "2024/refused.txt" }))), "NotFound");
    const kept = await s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "2024/headers.txt" }));
    assert.deepEqual([kept.CacheControl, kept.ContentDisposition, kept.ContentEncoding, kept.ContentLanguage, kept.ExpiresString], ["max-age=60", 'attachment; filename="h.txt"', "gzip", "fr", expires.toUTCString()]);
    // No object has tags (the AWS CLI reads them before copying one), and none can be set.
    assert.deepEqual((await s3.send(new GetObjectTaggingCommand({ Bucket: "photos", Key: "2024/cat.jpg" }))).TagSet, []);
    assert.equal(await code(s3.send(new GetObjectTaggingCommand({ Bucket: "photos", Key: "2024/none" }))), "NoSuchKey");
    assert.equal(await code(s3.send(new PutObjectTaggingCommand({ Bucket: "photos", Key: "2024/cat.jpg", Tagging: { TagSet: [{ Key: "a", Value: "b" }] } }))), "NotImplemented");
    assert.equal(await code(s3.send(new PutObjectCommand({ Bucket: "photos", Key: "2024/tagged", Body: "x", Tagging: "a=b" }))), "NotImplemented");
    assert.equal(await code(s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "2024/tagged" }))), "NotFound");
    assert.equal(await code(s3.send(new PutObjectCommand({ Bucket: "photos", Key: "a//b", Body: "x" }))), "InvalidArgument");
  });

  await t.test("copy without moving data, with metadata kept or replaced", async () => {
    const same = await s3.send(new CopyObjectCommand({ Bucket: "photos", Key: "copy.jpg", CopySource: "photos/2024/cat.jpg" }));
    assert.equal(same.CopyObjectResult!.ETag, `"${md5(data)}"`);
    assert.equal((await s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "copy.jpg" }))).ContentType, "image/jpeg");
    await s3.send(new CopyObjectCommand({ Bucket: "photos", Key: "copy2.jpg", CopySource: "photos/2024/cat.jpg", MetadataDirective: "REPLACE", ContentType: "text/plain", Metadata: { a: "b" } }));
    const h = await s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "copy2.jpg" }));
    assert.equal(h.ContentType, "text/plain");
    assert.deepEqual(h.Metadata, { a: "b" });
    assert.deepEqual(await bytes(s3, "photos", "copy2.jpg"), data);
    // The source's conditions are the copy's: each one that fails is 412, and nothing is written.
    const copy = (extra: Partial<ConstructorParameters<typeof CopyObjectCommand>[0]>) => s3.send(new CopyObjectCommand({ Bucket: "photos", Key: "copy3.jpg", CopySource: "photos/2024/cat.jpg", ...extra }));
    assert.equal(await code(copy({ CopySourceIfMatch: '"0123"' })), "PreconditionFailed");
    assert.equal(await code(copy({ CopySourceIfNoneMatch: `"${md5(data)}"` })), "PreconditionFailed");
    assert.equal(await code(copy({ CopySourceIfModifiedSince: new Date(Date.now() + 3_600_000) })), "PreconditionFailed");
    assert.equal(await code(copy({ CopySourceIfUnmodifiedSince: new Date(Date.now() - 3_600_000) })), "PreconditionFailed");
    assert.equal(await code(copy({ CopySource: "photos/2024/cat.jpg?versionId=abc" })), "NotImplemented", "no other version is copied instead");
    assert.equal(await code(s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "copy3.jpg" }))), "NotFound");
    assert.equal((await copy({ CopySourceIfMatch: `"${md5(data)}"`, CopySourceIfModifiedSince: new Date(Date.now() - 3_600_000) })).CopyObjectResult!.ETag, `"${md5(data)}"`);
    const [a, b] = await Promise.all(["/photos/2024/cat.jpg", "/photos/copy2.jpg"].map(async (p) => JSON.parse((await c.client(["stat", "--json", p])).stdout) as { chunks: { hash: string }[] }));
    assert.deepEqual(b!.chunks.map((x) => x.hash), a!.chunks.map((x) => x.hash), "the copy names the same chunks");
  });

  await t.test("listings: prefix, delimiter, pages, start-after, v1 markers", async () => {
    for (const k of ["l/a", "l/b/1", "l/b/2", "l/c", "l/d/1", "l/e"]) await s3.send(new PutObjectCommand({ Bucket: "photos", Key: k, Body: k }));
    const v2 = await s3.send(new ListObjectsV2Command({ Bucket: "photos", Prefix: "l/", Delimiter: "/" }));
    assert.deepEqual(v2.Contents!.map((o) => o.Key), ["l/a", "l/c", "l/e"]);
    assert.deepEqual(v2.CommonPrefixes!.map((p) => p.Prefix), ["l/b/", "l/d/"]);
    assert.equal(v2.Contents![0]!.ETag, `"${md5(Buffer.from("l/a"))}"`);
    const seen: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: "photos", Prefix: "l/", MaxKeys: 2, ContinuationToken: token }));
      assert.ok((page.KeyCount ?? 0) <= 2);
      seen.push(...(page.Contents ?? []).map((o) => o.Key!));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    assert.deepEqual(seen, ["l/a", "l/b/1", "l/b/2", "l/c", "l/d/1", "l/e"]);
    const after = await s3.send(new ListObjectsV2Command({ Bucket: "photos", Prefix: "l/", StartAfter: "l/c" }));
    assert.deepEqual(after.Contents!.map((o) => o.Key), ["l/d/1", "l/e"]);
    const v1 = await s3.send(new ListObjectsCommand({ Bucket: "photos", Prefix: "l/", Marker: "l/b/2", MaxKeys: 2 }));
    assert.deepEqual(v1.Contents!.map((o) => o.Key), ["l/c", "l/d/1"]);
    assert.equal(v1.IsTruncated, true);
    const del = await s3.send(new DeleteObjectsCommand({ Bucket: "photos", Delete: { Objects: [{ Key: "l/a" }, { Key: "l/c" }, { Key: "l/none" }] } }));
    assert.deepEqual(del.Deleted!.map((d) => d.Key).sort(), ["l/a", "l/c", "l/none"]);
    await s3.send(new DeleteObjectCommand({ Bucket: "photos", Key: "l/e" }));
    const left = await s3.send(new ListObjectsV2Command({ Bucket: "photos", Prefix: "l/" }));
    assert.deepEqual(left.Contents!.map((o) => o.Key), ["l/b/1", "l/b/2", "l/d/1"]);
    assert.equal(await code(s3.send(new DeleteBucketCommand({ Bucket: "photos" }))), "BucketNotEmpty");
  });

  await t.test("DeleteObjects deletes exactly the keys it names", async () => {
    await s3.send(new CreateBucketCommand({ Bucket: "deletes" }));
    // The SDK writes U+2028 in a key as the character reference &#x2028; (Go's encoder so writes every quote),
    // and a key's leading and trailing spaces as they are: " pad " is not "pad".
    const keys = ["line\u2028sep", " pad ", "pad"];
    for (const k of keys) await s3.send(new PutObjectCommand({ Bucket: "deletes", Key: k, Body: k }));
    const del = await s3.send(new DeleteObjectsCommand({ Bucket: "deletes", Delete: { Objects: [{ Key: "line\u2028sep" }, { Key: " pad " }] } }));
    assert.deepEqual(del.Deleted!.map((d) => d.Key).sort(), [" pad ", "line\u2028sep"]);
    const left = await s3.send(new ListObjectsV2Command({ Bucket: "deletes" }));
    assert.deepEqual(left.Contents!.map((o) => o.Key), ["pad"]);
  });

  await t.test("multipart: lib-storage upload, parts listed, completion checked, abort", async () => {
    const big = randomBytes(12 * 1024 * 1024 + 12345);
    const up = new Upload({ client: s3, params: { Bucket: "photos", Key: "big.bin", Body: big, ContentType: "application/x-big" }, partSize: 5 * 1024 * 1024, queueSize: 2 });
    const done = await up.done();
    const partMd5s = [0, 1, 2].map((i) => Buffer.from(md5(big.subarray(i * 5 * 1024 * 1024, (i + 1) * 5 * 1024 * 1024)), "hex"));
    assert.equal(done.ETag, `"${createHash("md5").update(Buffer.concat(partMd5s)).digest("hex")}-3"`);
    assert.deepEqual(await bytes(s3, "photos", "big.bin"), big);
    assert.equal((await s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "big.bin" }))).ContentType, "application/x-big");
    const stat = JSON.parse((await c.client(["stat", "--json", "/photos/big.bin"])).stdout) as { sha256: string };
    assert.equal(stat.sha256, createHash("sha256").update(big).digest("hex"));

    // UploadPartCopy: parts cut from other objects by range, or whole (how the AWS CLI copies a large object).
    const copied = await s3.send(new CreateMultipartUploadCommand({ Bucket: "photos", Key: "copied.bin" }));
    const copyPart = (PartNumber: number, CopySourceRange?: string, extra: { CopySource?: string; CopySourceIfMatch?: string } = {}) =>
      s3.send(new UploadPartCopyCommand({ Bucket: "photos", Key: "copied.bin", UploadId: copied.UploadId, PartNumber, CopySource: "photos/big.bin", CopySourceRange, ...extra }));
    const cut = 5 * 1024 * 1024;
    const c1 = (await copyPart(1, `bytes=0-${cut - 1}`)).CopyPartResult!.ETag!;
    const c2 = (await copyPart(2, `bytes=${cut}-${big.length - 1}`)).CopyPartResult!.ETag!;
    const c3 = (await copyPart(3, undefined, { CopySource: "photos/2024/cat.jpg" })).CopyPartResult!.ETag!;
    assert.deepEqual([c1, c2, c3], [big.subarray(0, cut), big.subarray(cut), data].map((b) => `"${md5(b)}"`));
    assert.equal(await code(copyPart(4, `bytes=0-${big.length}`)), "InvalidArgument", "a range past the end");
    assert.equal(await code(copyPart(4, "bytes=5-")), "InvalidArgument", "a range without its end");
    assert.equal(await code(copyPart(4, undefined, { CopySourceIfMatch: '"0123"' })), "PreconditionFailed");
    await s3.send(new CompleteMultipartUploadCommand({ Bucket: "photos", Key: "copied.bin", UploadId: copied.UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: c1 }, { PartNumber: 2, ETag: c2 }, { PartNumber: 3, ETag: c3 }] } }));
    assert.deepEqual(await bytes(s3, "photos", "copied.bin"), Buffer.concat([big, data]));

    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: "photos", Key: "parts.bin" }));
    const p1 = randomBytes(5 * 1024 * 1024);
    const e1 = (await s3.send(new UploadPartCommand({ Bucket: "photos", Key: "parts.bin", UploadId, PartNumber: 1, Body: p1 }))).ETag!;
    const e2 = (await s3.send(new UploadPartCommand({ Bucket: "photos", Key: "parts.bin", UploadId, PartNumber: 2, Body: "tail" }))).ETag!;
    const parts = await s3.send(new ListPartsCommand({ Bucket: "photos", Key: "parts.bin", UploadId }));
    assert.deepEqual(parts.Parts!.map((p) => [p.PartNumber, p.ETag, p.Size]), [[1, e1, p1.length], [2, e2, 4]]);
    const uploads = await s3.send(new ListMultipartUploadsCommand({ Bucket: "photos" }));
    assert.deepEqual(uploads.Uploads!.map((u) => [u.Key, u.UploadId]), [["parts.bin", UploadId]]);
    const complete = (Parts: { PartNumber: number; ETag: string }[]) => s3.send(new CompleteMultipartUploadCommand({ Bucket: "photos", Key: "parts.bin", UploadId, MultipartUpload: { Parts } }));
    assert.equal(await code(complete([{ PartNumber: 1, ETag: e1 }, { PartNumber: 2, ETag: '"00"' }])), "InvalidPart");
    assert.equal(await code(complete([{ PartNumber: 2, ETag: e2 }, { PartNumber: 1, ETag: e1 }])), "InvalidPartOrder");
    assert.equal(await code(s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "parts.bin" }))), "NotFound", "nothing visible before completion");
    await s3.send(new AbortMultipartUploadCommand({ Bucket: "photos", Key: "parts.bin", UploadId }));
    assert.equal(await code(s3.send(new ListPartsCommand({ Bucket: "photos", Key: "parts.bin", UploadId }))), "NoSuchUpload");
    assert.equal((await s3.send(new ListMultipartUploadsCommand({ Bucket: "photos" }))).Uploads, undefined);
  });

  await t.test("a file written by the client is an object, and an object is a file", async () => {
    const work = tmpDir(t);
    const local = path.join(work, "from-repl");
    const payload = randomBytes(70_000);
    fs.writeFileSync(local, payload);
    assert.equal((await c.client(["write", "/photos/from-repl.bin", local])).code, 0);
    assert.deepEqual(await bytes(s3, "photos", "from-repl.bin"), payload);
    const etag = (await s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "from-repl.bin" }))).ETag!;
    assert.match(etag, /^"[0-9a-f]{32}-1"$/, "not mistaken for an MD5");
    await s3.send(new PutObjectCommand({ Bucket: "photos", Key: "to-repl.bin", Body: payload }));
    const back = path.join(work, "back");
    assert.equal((await c.client(["read", "/photos/to-repl.bin", back])).code, 0);
    assert.deepEqual(fs.readFileSync(back), payload);
  });

  await t.test("authentication: bad secret, unknown key, a key scoped to other buckets, presigned URLs", async () => {
    assert.equal(await code(s3Client(gw.url, { id: key.id, secret: key.secret.replace(/^./, (ch) => (ch === "A" ? "B" : "A")) }).send(new ListBucketsCommand({}))), "SignatureDoesNotMatch");
    assert.equal(await code(s3Client(gw.url, { id: "DFSNOSUCHKEY00000000", secret: key.secret }).send(new ListBucketsCommand({}))), "InvalidAccessKeyId");
    const scoped = s3Client(gw.url, await addKey(t, c, ["other"]));
    assert.equal(await code(scoped.send(new GetObjectCommand({ Bucket: "photos", Key: "2024/cat.jpg" }))), "AccessDenied");
    assert.equal(await code(scoped.send(new PutObjectCommand({ Bucket: "photos", Key: "evil", Body: "x" }))), "AccessDenied");
    assert.deepEqual((await scoped.send(new ListBucketsCommand({}))).Buckets ?? [], []);
    assert.equal(await code(s3.send(new HeadObjectCommand({ Bucket: "photos", Key: "evil" }))), "NotFound", "nothing changed");
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: "photos", Key: "2024/cat.jpg" }), { expiresIn: 60 });
    const r = await fetch(url);
    assert.equal(r.status, 200);
    assert.deepEqual(Buffer.from(await r.arrayBuffer()), data);
    const tampered = await fetch(url.replace("cat.jpg", "copy.jpg"));
    assert.equal(tampered.status, 403);
    assert.match(await tampered.text(), /<Code>SignatureDoesNotMatch<\/Code>/);
    const short = await getSignedUrl(s3, new GetObjectCommand({ Bucket: "photos", Key: "2024/cat.jpg" }), { expiresIn: 1 });
    await waitFor(async () => (await fetch(short)).status === 403 || undefined, "the presigned URL to expire", 10_000, 250);
    assert.match(await (await fetch(short)).text(), /<Code>AccessDenied<\/Code>.*expired/s);
  });
});

test("the gateway serves HTTPS with the cluster's certificate", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const key = await addKey(t, c);
  const gw = await startGateway(t, c, { https: true });
  assert.match(gw.url, /^https:/);
  const s3 = s3Client(gw.url, key, c.certs);
  t.after(() => s3.destroy());
  await s3.send(new CreateBucketCommand({ Bucket: "secure" }));
  await s3.send(new PutObjectCommand({ Bucket: "secure", Key: "k", Body: "over tls" }));
  assert.equal((await bytes(s3, "secure", "k")).toString(), "over tls");
});

test("a client that goes away mid-upload leaves no object, and the gateway serves on", async (t) => {
  const c = await startCluster(t, { storage: 2 });
  const key = await addKey(t, c);
  const gw = await startGateway(t, c);
  const s3 = s3Client(gw.url, key);
  t.after(() => s3.destroy());
  await s3.send(new CreateBucketCommand({ Bucket: "cut" }));
  await s3.send(new PutObjectCommand({ Bucket: "cut", Key: "half", Body: "old" }));

  const url = new URL(gw.url);
  const size = 16 * 1024 * 1024;
  const signed = await sdkSigner(key.secret, key.id).sign({
    method: "PUT", protocol: "http:", hostname: url.hostname, port: Number(url.port), path: "/cut/half", query: {},
    headers: { host: url.host, "content-length": String(size), "x-amz-content-sha256": "UNSIGNED-PAYLOAD" },
  });
  const sent = await new Promise<number>((resolve, reject) => {
    const req = http.request({ host: url.hostname, port: url.port, method: "PUT", path: "/cut/half", headers: signed.headers });
    req.on("error", () => undefined); // the socket is cut on purpose
    req.write(randomBytes(size / 2), (err) => {
      if (err) return reject(err);
      req.destroy();
      resolve(size / 2);
    });
  });
  assert.equal(sent, size / 2);
  // The half-sent version never appears: the old one stays, and the gateway answers the next request.
  await waitFor(async () => (await bytes(s3, "cut", "half")).toString() === "old" || undefined, "the gateway serving after the cut");
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: "cut" }));
  assert.deepEqual(listed.Contents!.map((o) => [o.Key, o.Size]), [["half", 3]]);
});

test("`npm start -- --s3` runs a gateway with a key kept beside the cluster's data", async (t) => {
  const work = tmpDir(t);
  const data = path.join(work, "cluster");
  const port = Number(new URL(await freeAddress()).port);
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const child = spawn(npm, ["--prefix", ROOT, "start", "--", "--data", data, "--s3", `127.0.0.1:${port}`], { cwd: work, stdio: ["pipe", "pipe", "pipe"] });
  t.after(() => child.kill("SIGKILL"));
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  const keyFile = path.join(data, "s3-key.json");
  const key = await waitFor(() => (fs.existsSync(keyFile) ? JSON.parse(fs.readFileSync(keyFile, "utf8")) as { id: string; secret: string } : undefined), "the key file");
  const s3 = s3Client(`http://127.0.0.1:${port}`, key);
  t.after(() => s3.destroy());
  await waitFor(async () => (await s3.send(new CreateBucketCommand({ Bucket: "local" })).then(() => true, () => undefined)), "the gateway answering");
  await s3.send(new PutObjectCommand({ Bucket: "local", Key: "k", Body: "via the local gateway" }));
  assert.equal((await bytes(s3, "local", "k")).toString(), "via the local gateway");
  child.stdin.end();
  assert.equal(await exited, 0);
});

test("GetObject of many chunks waits for the socket without piling up listeners", async (t) => {
  // Small chunks: the response waits to drain once per chunk written, here dozens of times.
  const c = await startCluster(t, { storage: 2, directoryArgs: ["--chunk-size", String(64 * 1024)] });
  const key = await addKey(t, c);
  const gw = await startGateway(t, c);
  const s3 = s3Client(gw.url, key);
  t.after(() => s3.destroy());
  await s3.send(new CreateBucketCommand({ Bucket: "chunks" }));
  const data = randomBytes(2 * 1024 * 1024);
  await s3.send(new PutObjectCommand({ Bucket: "chunks", Key: "many", Body: data }));
  const stat = JSON.parse((await c.client(["stat", "--json", "/chunks/many"])).stdout) as { chunks: unknown[] };
  assert.ok(stat.chunks.length >= 32, `${stat.chunks.length} chunks`);
  for (let i = 0; i < 3; i++) assert.deepEqual(await bytes(s3, "chunks", "many"), data);
  // Node warns on the gateway's stderr once an emitter holds more than 10 listeners of one event.
  assert.doesNotMatch(gw.proc.stderr, /MaxListenersExceededWarning/);
});
