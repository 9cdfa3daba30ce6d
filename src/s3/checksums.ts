import { createHash } from "node:crypto";
import { endianness } from "node:os";
import { crc32 } from "node:zlib";
import { S3AuthError } from "./errors.js";

/** The algorithms of S3's additional checksums (x-amz-checksum-ALG), all of which are verified here. */
export type ChecksumAlgorithm = "crc32" | "crc32c" | "crc64nvme" | "sha1" | "sha256";
const ALGORITHMS: readonly ChecksumAlgorithm[] = ["crc32", "crc32c", "crc64nvme", "sha1", "sha256"];
const DIGEST_BYTES: Record<ChecksumAlgorithm | "md5", number> = { crc32: 4, crc32c: 4, crc64nvme: 8, sha1: 20, sha256: 32, md5: 16 };
const LABEL: Record<ChecksumAlgorithm | "md5", string> = {
  crc32: "CRC32",
  crc32c: "CRC32C",
  crc64nvme: "CRC64NVME",
  sha1: "SHA1",
  sha256: "SHA256",
  md5: "Content-MD5",
};

export interface Digest {
  update(data: Buffer): void;
  /** The checksum as S3 writes it: base64 of the big-endian bytes. */
  digest(): string;
}

/** "x-amz-checksum-crc32" → "crc32"; undefined for other names, including x-amz-checksum-algorithm/-type/-mode, which carry no value to check. */
export function checksumAlgorithmOf(headerName: string): ChecksumAlgorithm | undefined {
  const prefix = "x-amz-checksum-";
  if (!headerName.startsWith(prefix)) return undefined;
  const alg = headerName.slice(prefix.length);
  return (ALGORITHMS as readonly string[]).includes(alg) ? (alg as ChecksumAlgorithm) : undefined;
}

function be32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

// CRC-32C (Castagnoli, reflected 0x82F63B78) and CRC-64/NVME (reflected 0x9A6C9329AC4BC9B5) have no node:
// implementation. Both are table-driven eight bytes at a time (slicing-by-8): table k holds a byte's CRC followed by
// k zero bytes. The 64-bit one is kept as two 32-bit halves so no BigInt runs per byte. Running values stay in
// locals and in int32 range: a number rewritten per byte in a closure would be boxed per byte.
const C32 = new Int32Array(8 * 256);
const H64 = new Int32Array(8 * 256);
const L64 = new Int32Array(8 * 256);
for (let n = 0; n < 256; n++) {
  let c = n;
  let hi = 0;
  let lo = n;
  for (let k = 0; k < 8; k++) {
    c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    const lsb = lo & 1;
    lo = (lo >>> 1) | (hi << 31);
    hi = hi >>> 1;
    if (lsb) {
      hi ^= 0x9a6c9329;
      lo ^= 0xac4bc9b5;
    }
  }
  C32[n] = c;
  H64[n] = hi;
  L64[n] = lo;
}
for (let t = 256; t < 8 * 256; t++) {
  const c = C32[t - 256]!;
  C32[t] = (c >>> 8) ^ C32[c & 0xff]!;
  const hi = H64[t - 256]!;
  const lo = L64[t - 256]!;
  L64[t] = ((lo >>> 8) | (hi << 24)) ^ L64[lo & 0xff]!;
  H64[t] = (hi >>> 8) ^ H64[lo & 0xff]!;
}

// Eight bytes are read as two little-endian int32 words: reading a Buffer byte by byte is what makes a JavaScript CRC
// slow. Words must be aligned, so a head is done byte by byte; a big-endian host does everything byte by byte.
const LITTLE_ENDIAN = endianness() === "LE";
const NO_WORDS = new Int32Array(0);

function words(d: Buffer, from: number): Int32Array {
  const n = LITTLE_ENDIAN ? (d.length - from) >> 3 : 0;
  // A short piece may never reach alignment, and the view would refuse its offset even for no words.
  return n === 0 ? NO_WORDS : new Int32Array(d.buffer, d.byteOffset + from, n * 2);
}

function crc32c(c: number, d: Buffer): number {
  let i = 0;
  for (; i < d.length && (d.byteOffset + i) & 3; i++) c = C32[(c ^ d[i]!) & 0xff]! ^ (c >>> 8);
  const w = words(d, i);
  for (let j = 0; j < w.length; j += 2) {
    c ^= w[j]!;
    const e = w[j + 1]!;
    c =
      C32[1792 + (c & 0xff)]! ^ C32[1536 + ((c >>> 8) & 0xff)]! ^ C32[1280 + ((c >>> 16) & 0xff)]! ^ C32[1024 + (c >>> 24)]! ^
      C32[768 + (e & 0xff)]! ^ C32[512 + ((e >>> 8) & 0xff)]! ^ C32[256 + ((e >>> 16) & 0xff)]! ^ C32[e >>> 24]!;
  }
  for (i += w.length * 4; i < d.length; i++) c = C32[(c ^ d[i]!) & 0xff]! ^ (c >>> 8);
  return c;
}

function crc64nvme(state: Int32Array, d: Buffer): void {
  let hi = state[0]!;
  let lo = state[1]!;
  const byte = (x: number) => {
    const t = (lo ^ x) & 0xff;
    lo = ((lo >>> 8) | (hi << 24)) ^ L64[t]!;
    hi = (hi >>> 8) ^ H64[t]!;
  };
  let i = 0;
  for (; i < d.length && (d.byteOffset + i) & 3; i++) byte(d[i]!);
  const w = words(d, i);
  for (let j = 0; j < w.length; j += 2) {
    const a = lo ^ w[j]!;
    const b = hi ^ w[j + 1]!;
    hi =
      H64[1792 + (a & 0xff)]! ^ H64[1536 + ((a >>> 8) & 0xff)]! ^ H64[1280 + ((a >>> 16) & 0xff)]! ^ H64[1024 + (a >>> 24)]! ^
      H64[768 + (b & 0xff)]! ^ H64[512 + ((b >>> 8) & 0xff)]! ^ H64[256 + ((b >>> 16) & 0xff)]! ^ H64[b >>> 24]!;
    lo =
      L64[1792 + (a & 0xff)]! ^ L64[1536 + ((a >>> 8) & 0xff)]! ^ L64[1280 + ((a >>> 16) & 0xff)]! ^ L64[1024 + (a >>> 24)]! ^
      L64[768 + (b & 0xff)]! ^ L64[512 + ((b >>> 8) & 0xff)]! ^ L64[256 + ((b >>> 16) & 0xff)]! ^ L64[b >>> 24]!;
  }
  for (i += w.length * 4; i < d.length; i++) byte(d[i]!);
  state[0] = hi;
  state[1] = lo;
}

export function createDigest(alg: ChecksumAlgorithm | "md5"): Digest {
  switch (alg) {
    case "crc32": {
      let c = 0;
      return { update: (d) => void (c = crc32(d, c)), digest: () => be32(c).toString("base64") };
    }
    case "crc32c": {
      let c = -1;
      return { update: (d) => void (c = crc32c(c, d)), digest: () => be32(~c).toString("base64") };
    }
    case "crc64nvme": {
      const state = new Int32Array([-1, -1]);
      return { update: (d) => crc64nvme(state, d), digest: () => Buffer.concat([be32(~state[0]!), be32(~state[1]!)]).toString("base64") };
    }
    default: {
      const h = createHash(alg);
      return { update: (d) => void h.update(d), digest: () => h.digest("base64") };
    }
  }
}

/** A digest running over the object's bytes and the value it must come to, which a trailer may only supply at the end. */
export interface BodyCheck {
  name: string; // "content-md5" or "x-amz-checksum-ALG"
  alg: ChecksumAlgorithm | "md5";
  digest: Digest;
  expected?: string;
}

export function wellFormed(alg: ChecksumAlgorithm | "md5", value: string): boolean {
  return /^[A-Za-z0-9+/]+={0,2}$/.test(value) && Buffer.from(value, "base64").length === DIGEST_BYTES[alg];
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(",") : v;
}

/** The checks that request headers ask for: Content-MD5 and any x-amz-checksum-ALG value. */
export function headerChecks(headers: Record<string, string | string[] | undefined>): BodyCheck[] {
  const checks: BodyCheck[] = [];
  const md5 = one(headers["content-md5"]);
  if (md5 !== undefined) {
    if (!wellFormed("md5", md5.trim())) throw new S3AuthError("InvalidDigest", "The Content-MD5 you specified was invalid.", 400);
    checks.push({ name: "content-md5", alg: "md5", digest: createDigest("md5"), expected: md5.trim() });
  }
  for (const [name, raw] of Object.entries(headers)) {
    const alg = checksumAlgorithmOf(name);
    const value = one(raw)?.trim();
    if (alg === undefined || value === undefined) continue;
    if (!wellFormed(alg, value)) throw new S3AuthError("InvalidRequest", `Value for ${name} header is invalid.`, 400);
    checks.push({ name, alg, digest: createDigest(alg), expected: value });
  }
  return checks;
}

export function finishChecks(checks: readonly BodyCheck[]): void {
  for (const c of checks) {
    const got = c.digest.digest();
    if (got === c.expected) continue;
    const message =
      c.alg === "md5"
        ? "The Content-MD5 you specified did not match what we received."
        : `The ${LABEL[c.alg]} you specified did not match the calculated checksum.`;
    throw new S3AuthError("BadDigest", message, 400);
  }
}
