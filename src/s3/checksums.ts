import { createHash } from "node:crypto";
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

// CRC-32C (Castagnoli, reflected 0x82F63B78) has no node: implementation, so it is table-driven here.
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

// CRC-64/NVME (reflected 0x9A6C9329AC4BC9B5), kept as two 32-bit halves so no BigInt runs per byte.
const CRC64_HI = new Uint32Array(256);
const CRC64_LO = new Uint32Array(256);
for (let i = 0; i < 256; i++) {
  let hi = 0;
  let lo = i;
  for (let k = 0; k < 8; k++) {
    const lsb = lo & 1;
    lo = ((lo >>> 1) | ((hi & 1) << 31)) >>> 0;
    hi = hi >>> 1;
    if (lsb) {
      hi = (hi ^ 0x9a6c9329) >>> 0;
      lo = (lo ^ 0xac4bc9b5) >>> 0;
    }
  }
  CRC64_HI[i] = hi;
  CRC64_LO[i] = lo;
}

export function createDigest(alg: ChecksumAlgorithm | "md5"): Digest {
  switch (alg) {
    case "crc32": {
      let c = 0;
      return { update: (d) => void (c = crc32(d, c)), digest: () => be32(c).toString("base64") };
    }
    case "crc32c": {
      let c = 0xffffffff;
      return {
        update: (d) => {
          for (let i = 0; i < d.length; i++) c = CRC32C_TABLE[(c ^ d[i]!) & 0xff]! ^ (c >>> 8);
        },
        digest: () => be32(~c).toString("base64"),
      };
    }
    case "crc64nvme": {
      let hi = 0xffffffff;
      let lo = 0xffffffff;
      return {
        update: (d) => {
          for (let i = 0; i < d.length; i++) {
            const x = (lo ^ d[i]!) & 0xff;
            lo = (((lo >>> 8) | (hi << 24)) ^ CRC64_LO[x]!) >>> 0;
            hi = ((hi >>> 8) ^ CRC64_HI[x]!) >>> 0;
          }
        },
        digest: () => Buffer.concat([be32(~hi), be32(~lo)]).toString("base64"),
      };
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
