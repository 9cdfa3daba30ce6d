// Requests signed by the AWS SDK's own signer, shaped as the S3 gateway receives them.
import { Sha256 } from "@aws-crypto/sha256-js";
import { SignatureV4 } from "@smithy/signature-v4";
import { Readable, Writable, type Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { SecretLookup, SignedRequest } from "../../src/s3/sigv4.js";

export const AKID = "AKIAIOSFODNN7EXAMPLE";
export const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
export const NOW = Date.UTC(2025, 0, 15, 12, 0, 0);
export const HOST = "s3.dfs.test:9443";
export const lookup: SecretLookup = async (id) => (id === AKID ? SECRET : undefined);

/** As the S3 client configures it: the path is signed as sent, never encoded a second time. */
export function sdkSigner(secret = SECRET, accessKeyId = AKID): SignatureV4 {
  return new SignatureV4({ service: "s3", region: "us-east-1", credentials: { accessKeyId, secretAccessKey: secret }, sha256: Sha256, uriEscapePath: false });
}

/** Strict RFC 3986 encoding, as the SDK puts names and values on the wire. */
export function enc(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
}

export type Query = Record<string, string | string[]>;

export function wireQuery(query: Query): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(query)) for (const one of Array.isArray(v) ? v : [v]) parts.push(`${enc(k)}=${enc(one)}`);
  return parts.join("&");
}

function lower(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));
}

export interface Spec {
  method: string;
  /** Already encoded, as on the wire. */
  path: string;
  query?: Query;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export async function signed(spec: Spec, opts: { secret?: string; akid?: string; date?: number } = {}): Promise<SignedRequest> {
  const r = await sdkSigner(opts.secret, opts.akid).sign(
    { method: spec.method, protocol: "https:", hostname: "s3.dfs.test", port: 9443, path: spec.path, query: spec.query ?? {}, headers: { host: HOST, ...spec.headers }, body: spec.body },
    { signingDate: new Date(opts.date ?? NOW) },
  );
  return { method: spec.method, rawPath: spec.path, rawQuery: wireQuery(spec.query ?? {}), headers: lower(r.headers) };
}

/** As the SDK's S3 presigner does it: payload UNSIGNED-PAYLOAD (hoisted into the query), content-type left unsigned. */
export async function presigned(spec: Spec, expiresIn: number, date = NOW): Promise<SignedRequest> {
  const r = await sdkSigner().presign(
    { method: spec.method, protocol: "https:", hostname: "s3.dfs.test", port: 9443, path: spec.path, query: spec.query ?? {}, headers: { host: HOST, "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD", ...spec.headers } },
    { signingDate: new Date(date), expiresIn, unsignableHeaders: new Set(["content-type"]) },
  );
  return { method: spec.method, rawPath: spec.path, rawQuery: wireQuery(r.query as Query), headers: lower(r.headers) };
}

/** The seed signature of a header-signed request. */
export function seedOf(req: SignedRequest): string {
  const m = /Signature=([0-9a-f]{64})/.exec(String(req.headers.authorization));
  if (!m) throw new Error("no signature");
  return m[1]!;
}

/** A small deterministic generator, so a failing slicing can be replayed. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Cuts a body into pieces of 1 to 7 bytes. */
export function smallPieces(body: Buffer, seed: number): Buffer[] {
  const r = rng(seed);
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; ) {
    const n = 1 + Math.floor(r() * 7);
    out.push(body.subarray(i, i + n));
    i += n;
  }
  return out;
}

/** Runs pieces through a verifier and returns what came out. */
export async function runThrough(t: Transform, pieces: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(pieces),
    t,
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}
