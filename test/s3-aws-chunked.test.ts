import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import test from "node:test";
import CRC32 from "crc-32";
import { S3AuthError, bodyVerifier, verifySigV4, type SignedRequest, type Verified } from "../src/s3/sigv4.js";
import { AwsChunkedDecoder } from "../src/s3/aws-chunked.js";
import { createDigest } from "../src/s3/checksums.js";
import { NOW, lookup, rng, runThrough, sdkSigner, seedOf, signed, smallPieces } from "./helpers/s3-sign.js";

const T = { timeout: 60_000 };
const SCOPE = "20250115/us-east-1/s3/aws4_request";
const AMZ_DATE = "20250115T120000Z";
const sha256hex = (b: string | Buffer) => createHash("sha256").update(b).digest("hex");

function fails(code: string, status?: number) {
  return (e: unknown) => {
    assert.ok(e instanceof S3AuthError, `expected S3AuthError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (status !== undefined) assert.equal(e.status, status);
    return true;
  };
}

function crc32b64(data: Buffer): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(CRC32.buf(data) >>> 0);
  return b.toString("base64");
}

/** The SDK's event signer computes exactly an S3 chunk signature when the event has no headers. */
async function chunkSignature(prior: string, data: Buffer): Promise<string> {
  return sdkSigner().sign({ headers: new Uint8Array(0), payload: data }, { priorSignature: prior, signingDate: new Date(NOW) });
}

interface ChunkedOpts {
  chunk?: number;
  decodedLength?: number;
  /** A signed trailer carrying this CRC32 value (the data's own when true). */
  signedTrailer?: true | string;
}

/** A STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER] request, seeded by the SDK's header signature. */
async function signedChunked(data: Buffer, o: ChunkedOpts = {}): Promise<{ req: SignedRequest; v: Verified; body: Buffer }> {
  const headers: Record<string, string> = {
    "x-amz-content-sha256": o.signedTrailer ? "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" : "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": String(o.decodedLength ?? data.length),
  };
  if (o.signedTrailer) headers["x-amz-trailer"] = "x-amz-checksum-crc32";
  const req = await signed({ method: "PUT", path: "/bucket/chunked.bin", headers });
  const v = await verifySigV4(req, lookup, { now: NOW });
  const size = o.chunk ?? 65536;
  const parts: Buffer[] = [];
  let prev = seedOf(req);
  for (let i = 0; i < data.length; i += size) {
    const piece = data.subarray(i, i + size);
    prev = await chunkSignature(prev, piece);
    parts.push(Buffer.from(`${piece.length.toString(16)};chunk-signature=${prev}\r\n`), piece, Buffer.from("\r\n"));
  }
  prev = await chunkSignature(prev, Buffer.alloc(0));
  parts.push(Buffer.from(`0;chunk-signature=${prev}\r\n`));
  if (o.signedTrailer) {
    const value = o.signedTrailer === true ? crc32b64(data) : o.signedTrailer;
    const toSign = ["AWS4-HMAC-SHA256-TRAILER", AMZ_DATE, SCOPE, prev, sha256hex(`x-amz-checksum-crc32:${value}\n`)].join("\n");
    const sig = await sdkSigner().sign(toSign, { signingDate: new Date(NOW) });
    parts.push(Buffer.from(`x-amz-checksum-crc32:${value}\r\nx-amz-trailer-signature:${sig}\r\n`));
  }
  parts.push(Buffer.from("\r\n"));
  return { req, v, body: Buffer.concat(parts) };
}

/** A STREAMING-UNSIGNED-PAYLOAD-TRAILER request framed as the JavaScript SDK frames it. */
async function unsignedTrailer(data: Buffer, trailer?: { name: string; value: string }, announce = trailer?.name) {
  const headers: Record<string, string> = {
    "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": String(data.length),
  };
  if (announce) headers["x-amz-trailer"] = announce;
  const req = await signed({ method: "PUT", path: "/bucket/u.bin", headers });
  const v = await verifySigV4(req, lookup, { now: NOW });
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += 8192) {
    const piece = data.subarray(i, i + 8192);
    parts.push(Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from("\r\n"));
  }
  parts.push(Buffer.from("0\r\n"));
  if (trailer) parts.push(Buffer.from(`${trailer.name}:${trailer.value}\r\n\r\n`));
  return { req, v, body: Buffer.concat(parts) };
}

test("a signed aws-chunked body decodes whole, in one piece and in 1-7 byte pieces", T, async () => {
  const data = randomBytes(150_000);
  const { req, v, body } = await signedChunked(data);
  assert.equal(v.payload.kind, "streaming-signed");
  assert.deepEqual(await runThrough(bodyVerifier(v, req), [body]), data);
  for (const seed of [1, 2, 3]) assert.deepEqual(await runThrough(bodyVerifier(v, req), smallPieces(body, seed)), data);
  const small = await signedChunked(data.subarray(0, 5000), { chunk: 997 });
  assert.deepEqual(await runThrough(bodyVerifier(small.v, small.req), smallPieces(small.body, 4)), data.subarray(0, 5000));
  const empty = await signedChunked(Buffer.alloc(0));
  assert.equal((await runThrough(bodyVerifier(empty.v, empty.req), smallPieces(empty.body, 5))).length, 0);
});

test("a tampered, reordered or re-signed chunk fails SignatureDoesNotMatch", T, async () => {
  const data = randomBytes(3000);
  const { req, v, body } = await signedChunked(data, { chunk: 1000 });
  const secondHeader = body.indexOf("\r\n") + 2 + 1000 + 2;
  const flipped = Buffer.from(body);
  flipped[body.indexOf("\r\n", secondHeader) + 2 + 500] ^= 0x40;
  await assert.rejects(runThrough(bodyVerifier(v, req), smallPieces(flipped, 6)), fails("SignatureDoesNotMatch", 403));
  const lines = body.toString("latin1");
  const sigs = [...lines.matchAll(/chunk-signature=([0-9a-f]{64})/g)].map((m) => m[1]!);
  const badSig = Buffer.from(lines.replace(sigs[1]!, sigs[1]!.replace(/^./, (c) => (c === "0" ? "1" : "0"))), "latin1");
  await assert.rejects(runThrough(bodyVerifier(v, req), [badSig]), fails("SignatureDoesNotMatch"));
  // The same chunks chained from another request's seed signature.
  const later = await signed({ method: "PUT", path: "/bucket/chunked.bin", headers: { "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "content-encoding": "aws-chunked", "x-amz-decoded-content-length": "3000" } }, { date: NOW + 1000 });
  const v2 = await verifySigV4(later, lookup, { now: NOW });
  await assert.rejects(runThrough(bodyVerifier(v2, later), [body]), fails("SignatureDoesNotMatch"));
  const [a, b] = [body.indexOf("3e8;"), body.indexOf("3e8;", body.indexOf("3e8;") + 1)];
  const swapped = Buffer.concat([body.subarray(0, a), body.subarray(b, b + (b - a)), body.subarray(a, b), body.subarray(b + (b - a))]);
  assert.equal(swapped.length, body.length);
  await assert.rejects(runThrough(bodyVerifier(v, req), [swapped]), fails("SignatureDoesNotMatch"));
});

test("a truncated body fails IncompleteBody wherever it is cut", T, async () => {
  const data = randomBytes(2500);
  const { req, v, body } = await signedChunked(data, { chunk: 1000 });
  const r = rng(7);
  const cuts = [0, 10, 90, 95, 1095, 1096, 1097, body.length - 100, body.length - 3, ...Array.from({ length: 20 }, () => Math.floor(r() * (body.length - 3)))];
  for (const cut of cuts) {
    await assert.rejects(runThrough(bodyVerifier(v, req), smallPieces(body.subarray(0, cut), cut)), fails("IncompleteBody", 400), `cut at ${cut}`);
  }
});

test("x-amz-decoded-content-length is held to: longer fails IncompleteBody, shorter fails before the excess is passed on", T, async () => {
  const data = randomBytes(2000);
  const longer = await signedChunked(data, { chunk: 1000, decodedLength: 2001 });
  await assert.rejects(runThrough(bodyVerifier(longer.v, longer.req), [longer.body]), fails("IncompleteBody", 400));
  const shorter = await signedChunked(data, { chunk: 1000, decodedLength: 1999 });
  let passed = 0;
  const sink = new Writable({ write: (c: Buffer, _e, cb) => ((passed += c.length), cb()) });
  await assert.rejects(pipeline(Readable.from([shorter.body]), bodyVerifier(shorter.v, shorter.req), sink), fails("InvalidRequest", 400));
  assert.ok(passed <= 1000, `${passed} bytes passed on`);
});

test("malformed framing fails with a clear S3AuthError, never a hang or a stray error", T, async () => {
  const data = randomBytes(1200);
  const { req, v, body } = await signedChunked(data, { chunk: 1000 });
  const text = body.toString("latin1");
  const cases: Array<[string, Buffer, string]> = [
    ["size not hex", Buffer.from(text.replace(/^3e8/, "zz8"), "latin1"), "InvalidRequest"],
    ["size too large for the data", Buffer.from(text.replace(/^3e8/, "3f0"), "latin1"), "SignatureDoesNotMatch"],
    ["size too small", Buffer.from(text.replace(/^3e8/, "3e0"), "latin1"), "SignatureDoesNotMatch"],
    ["no chunk-signature", Buffer.from(text.replace(/^3e8;chunk-signature=[0-9a-f]{64}/, "3e8"), "latin1"), "InvalidRequest"],
    ["bare LF line ending", Buffer.from(text.replace(/^(3e8;chunk-signature=[0-9a-f]{64})\r\n/, "$1\n"), "latin1"), "InvalidRequest"],
    ["an endless header line", Buffer.alloc(10_000, "a"), "InvalidRequest"],
    ["data after the last chunk", Buffer.concat([body, Buffer.from("extra")]), "InvalidRequest"],
    ["trailer on a body signed without one", Buffer.from(text.replace(/\r\n\r\n$/, "\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"), "latin1"), "MalformedTrailerError"],
  ];
  for (const [what, bad, code] of cases) {
    assert.notDeepEqual(bad, body, what);
    await assert.rejects(runThrough(bodyVerifier(v, req), smallPieces(bad, 9)), fails(code), what);
  }
});

test("random damage to a signed body is always refused with an S3AuthError, or changes nothing", T, async () => {
  const data = randomBytes(3000);
  const { req, v, body } = await signedChunked(data, { chunk: 1000 });
  const r = rng(11);
  let refused = 0;
  const N = 300;
  for (let i = 0; i < N; i++) {
    const at = Math.floor(r() * body.length);
    const kind = i % 3;
    const bad =
      kind === 0
        ? Buffer.concat([body.subarray(0, at), Buffer.from([body[at]! ^ (1 + Math.floor(r() * 255))]), body.subarray(at + 1)])
        : kind === 1
          ? Buffer.concat([body.subarray(0, at), body.subarray(at + 1)])
          : Buffer.concat([body.subarray(0, at), Buffer.from([Math.floor(r() * 256)]), body.subarray(at)]);
    try {
      const out = await runThrough(bodyVerifier(v, req), smallPieces(bad, i));
      assert.deepEqual(out, data, `damage #${i} at ${at} was accepted with other bytes`);
    } catch (e) {
      assert.ok(e instanceof S3AuthError, `damage #${i} at ${at}: ${String(e)}`);
      refused++;
    }
  }
  assert.ok(refused > N * 0.95, `${refused} of ${N} refused`);
});

test("a signed trailer is verified: its signature and the CRC32 it carries", T, async () => {
  const data = randomBytes(70_000);
  const good = await signedChunked(data, { signedTrailer: true });
  assert.deepEqual(good.v.payload.kind === "streaming-signed" && good.v.payload.signedTrailer, true);
  assert.deepEqual(await runThrough(bodyVerifier(good.v, good.req), smallPieces(good.body, 12)), data);
  const wrongSum = await signedChunked(data, { signedTrailer: crc32b64(Buffer.from("other")) });
  await assert.rejects(runThrough(bodyVerifier(wrongSum.v, wrongSum.req), [wrongSum.body]), fails("BadDigest", 400));
  const forged = Buffer.from(good.body.toString("latin1").replace(`crc32:${crc32b64(data)}`, `crc32:${crc32b64(Buffer.from("x"))}`), "latin1");
  assert.notDeepEqual(forged, good.body);
  await assert.rejects(runThrough(bodyVerifier(good.v, good.req), [forged]), fails("SignatureDoesNotMatch", 403));
  const unsignedTrailerLine = Buffer.from(good.body.toString("latin1").replace(/x-amz-trailer-signature:[0-9a-f]+\r\n/, ""), "latin1");
  await assert.rejects(runThrough(bodyVerifier(good.v, good.req), [unsignedTrailerLine]), fails("MalformedTrailerError", 400));
});

test("an unsigned-trailer body as the JavaScript SDK frames it: its CRC32 trailer is checked, and missing ones refused", T, async () => {
  const data = randomBytes(40_000);
  const good = await unsignedTrailer(data, { name: "x-amz-checksum-crc32", value: crc32b64(data) });
  assert.deepEqual(good.v.payload, { kind: "streaming-unsigned-trailer", decodedLength: 40_000, trailers: ["x-amz-checksum-crc32"] });
  assert.deepEqual(await runThrough(bodyVerifier(good.v, good.req), [good.body]), data);
  assert.deepEqual(await runThrough(bodyVerifier(good.v, good.req), smallPieces(good.body, 13)), data);
  const altered = Buffer.from(good.body);
  altered[100] ^= 1;
  await assert.rejects(runThrough(bodyVerifier(good.v, good.req), [altered]), fails("BadDigest", 400));
  const bad = await unsignedTrailer(data, { name: "x-amz-checksum-crc32", value: crc32b64(data.subarray(1)) });
  await assert.rejects(runThrough(bodyVerifier(bad.v, bad.req), smallPieces(bad.body, 14)), fails("BadDigest", 400));
  const missing = await unsignedTrailer(data, undefined, "x-amz-checksum-crc32");
  await assert.rejects(runThrough(bodyVerifier(missing.v, missing.req), [missing.body]), fails("MalformedTrailerError", 400));
  const unannounced = await unsignedTrailer(data, { name: "x-amz-checksum-crc32", value: crc32b64(data) }, "");
  await assert.rejects(runThrough(bodyVerifier(unannounced.v, unannounced.req), [unannounced.body]), fails("MalformedTrailerError", 400));
  // Without a checksum the SDK ends the body at "0\r\n".
  const bare = await unsignedTrailer(data);
  assert.ok(bare.body.subarray(-5).toString("latin1").endsWith("\r\n0\r\n"));
  assert.deepEqual(await runThrough(bodyVerifier(bare.v, bare.req), smallPieces(bare.body, 15)), data);
  await assert.rejects(runThrough(bodyVerifier(bare.v, bare.req), [bare.body.subarray(0, -3)]), fails("IncompleteBody"));
});

test("CRC32C, CRC64NVME, SHA1 and SHA256 trailers are checked against their published check values", T, async () => {
  const data = Buffer.from("123456789");
  const known: Record<string, string> = {
    "x-amz-checksum-crc32c": Buffer.from("e3069283", "hex").toString("base64"),
    "x-amz-checksum-crc64nvme": Buffer.from("ae8b14860a799888", "hex").toString("base64"),
    "x-amz-checksum-sha1": createHash("sha1").update(data).digest("base64"),
    "x-amz-checksum-sha256": createHash("sha256").update(data).digest("base64"),
  };
  for (const [name, value] of Object.entries(known)) {
    const good = await unsignedTrailer(data, { name, value });
    assert.deepEqual(await runThrough(bodyVerifier(good.v, good.req), smallPieces(good.body, 16)), data, name);
    const other = Buffer.from(value, "base64");
    other[0] ^= 0x80;
    const bad = await unsignedTrailer(data, { name, value: other.toString("base64") });
    await assert.rejects(runThrough(bodyVerifier(bad.v, bad.req), [bad.body]), fails("BadDigest"), name);
  }
});

test("CRC32C and CRC64NVME agree with published vectors, and their word and byte paths agree at any alignment", () => {
  const hex = (alg: "crc32c" | "crc64nvme", ...pieces: Buffer[]) => {
    const d = createDigest(alg);
    for (const p of pieces) d.update(p);
    return Buffer.from(d.digest(), "base64").toString("hex");
  };
  // RFC 3720's CRC32C examples: 32 bytes each, so they run through the eight-byte path.
  assert.equal(hex("crc32c", Buffer.alloc(32)), "8a9136aa");
  assert.equal(hex("crc32c", Buffer.alloc(32, 0xff)), "62a8ab43");
  assert.equal(hex("crc32c", Buffer.from(Array.from({ length: 32 }, (_, i) => i))), "46dd794e");
  const data = randomBytes(10_003);
  for (const alg of ["crc32c", "crc64nvme"] as const) {
    const bytewise = hex(alg, ...Array.from(data, (_, i) => data.subarray(i, i + 1)));
    assert.equal(hex(alg, data), bytewise, alg);
    for (let off = 1; off < 8; off++) assert.equal(hex(alg, data.subarray(0, off), data.subarray(off)), bytewise, `${alg} split at ${off}`);
    assert.notEqual(hex(alg, data.subarray(1)), bytewise);
  }
});

test("64 MiB of signed chunks stream through with the decoder holding only a chunk header at a time", { timeout: 120_000 }, async () => {
  const CHUNK = 65536;
  const COUNT = 1024;
  const pool = [0, 1, 2, 3].map((i) => randomBytes(CHUNK).fill(i, 0, 1));
  const { req, v } = await signedChunked(Buffer.alloc(0), { decodedLength: CHUNK * COUNT });
  // Signatures are made ahead so that the stream below allocates nothing but framing.
  const sigs: string[] = [];
  let prev = seedOf(req);
  for (let i = 0; i < COUNT; i++) sigs.push((prev = await chunkSignature(prev, pool[i % 4]!)));
  const last = await chunkSignature(prev, Buffer.alloc(0));
  let produced = 0;
  function* body(): Generator<Buffer> {
    for (let i = 0; i < COUNT; i++) {
      const d = pool[i % 4]!;
      const head = Buffer.from(`${CHUNK.toString(16)};chunk-signature=${sigs[i]}\r\n`);
      // Framing and data meet mid-buffer, and a header is split, so boundaries fall everywhere.
      yield head.subarray(0, 17);
      yield Buffer.concat([head.subarray(17), d.subarray(0, 5)]);
      yield d.subarray(5, 40_000);
      yield d.subarray(40_000, CHUNK - 1);
      yield Buffer.concat([d.subarray(CHUNK - 1), Buffer.from("\r")]);
      yield Buffer.from("\n");
      produced += CHUNK;
    }
    yield Buffer.from(`0;chunk-signature=${last}\r\n\r\n`);
  }
  const decoder = bodyVerifier(v, req);
  assert.ok(decoder instanceof AwsChunkedDecoder);
  const base = process.memoryUsage();
  let consumed = 0;
  let maxLag = 0;
  let peakArrayBuffers = base.arrayBuffers;
  const hash = createHash("sha256");
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      hash.update(c);
      consumed += c.length;
      maxLag = Math.max(maxLag, produced - consumed);
      if ((consumed & 0xfffff) < c.length) peakArrayBuffers = Math.max(peakArrayBuffers, process.memoryUsage().arrayBuffers);
      cb();
    },
  });
  await pipeline(Readable.from(body()), decoder, sink);
  const expect = createHash("sha256");
  for (let i = 0; i < COUNT; i++) expect.update(pool[i % 4]!);
  assert.equal(consumed, CHUNK * COUNT);
  assert.equal(hash.digest("hex"), expect.digest("hex"));
  assert.ok(decoder.maxHeld <= 100, `decoder held ${decoder.maxHeld} bytes of framing`);
  assert.ok(maxLag <= 4 * 1024 * 1024, `the decoder ran ${maxLag} bytes behind its input`);
  const grown = (peakArrayBuffers - base.arrayBuffers) / 2 ** 20;
  assert.ok(grown < 32, `buffers grew by ${grown.toFixed(1)} MiB`);
  const rss = (process.memoryUsage().rss - base.rss) / 2 ** 20;
  assert.ok(rss < 128, `rss grew by ${rss.toFixed(1)} MiB`);
});
