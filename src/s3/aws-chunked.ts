import { createHash, createHmac, timingSafeEqual, type Hash } from "node:crypto";
import { Transform, type TransformCallback } from "node:stream";
import { checksumAlgorithmOf, createDigest, finishChecks, headerChecks, wellFormed, type BodyCheck } from "./checksums.js";
import { S3AuthError } from "./errors.js";
import type { ChunkSigning, SignedRequest, Verified } from "./sigv4.js";

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
// A signed chunk header is about 90 bytes; anything near this is not a chunk header.
const MAX_LINE = 4096;
const MAX_TRAILER_BYTES = 16 * 1024;
const MAX_TRAILERS = 32;

const incomplete = (m: string) => new S3AuthError("IncompleteBody", m, 400);
const framing = (m: string) => new S3AuthError("InvalidRequest", `Malformed aws-chunked body: ${m}`, 400);
const badTrailer = (m: string) => new S3AuthError("MalformedTrailerError", `The request contained trailing data that was not well-formed: ${m}`, 400);
const badSignature = (what: string) =>
  new S3AuthError("SignatureDoesNotMatch", `The ${what} signature we calculated does not match the signature you provided.`, 403);

function sameHex(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a, "latin1"), Buffer.from(b, "latin1"));
}

export interface AwsChunkedOptions {
  /** Present for STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]: every chunk, and the trailer when signedTrailer, is signed. */
  signing?: ChunkSigning & { signedTrailer: boolean };
  decodedLength?: number;
  /** Trailer names announced in x-amz-trailer; each must arrive, and the checksums among them are verified. */
  trailers: readonly string[];
  /** Checks from the request headers (Content-MD5, x-amz-checksum-*), run over the decoded bytes. */
  checks?: BodyCheck[];
}

type State = "size" | "data" | "dataEnd" | "trailer" | "done";

/**
 * Decodes an aws-chunked body into the object's bytes. Object bytes are passed on as views of the incoming buffers
 * as soon as they arrive; only a chunk header or trailer line is ever held, so memory stays bounded whatever the
 * body's size. A chunk's signature can only be checked once its last byte is in, so bytes of a forged chunk may
 * already have been passed on when the stream fails: the consumer must discard everything of a stream that errors.
 */
export class AwsChunkedDecoder extends Transform {
  /** The most bytes of framing held at once, for callers and tests that want to see the bound hold. */
  maxHeld = 0;
  private state: State = "size";
  private line: Buffer[] = [];
  private lineLen = 0;
  private remaining = 0;
  private crlfSeen = 0;
  private decoded = 0;
  private chunkHash?: Hash;
  private chunkSig = "";
  private prevSig: string;
  private readonly trailer = new Map<string, string>();
  private trailerBytes = 0;
  private readonly trailerChecks = new Map<string, BodyCheck>();
  private readonly checks: BodyCheck[];

  constructor(
    private readonly opts: AwsChunkedOptions,
    private readonly failure?: S3AuthError,
  ) {
    super();
    this.prevSig = opts.signing?.seedSignature ?? "";
    this.checks = opts.checks ?? [];
    for (const name of opts.trailers) {
      const alg = checksumAlgorithmOf(name);
      if (alg !== undefined) this.trailerChecks.set(name, { name, alg, digest: createDigest(alg) });
    }
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.failure) return cb(this.failure);
    try {
      this.consume(chunk);
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (this.failure) return cb(this.failure);
    try {
      this.finish();
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  private consume(buf: Buffer): void {
    let i = 0;
    while (i < buf.length) {
      switch (this.state) {
        case "size":
        case "trailer": {
          const nl = buf.indexOf(0x0a, i);
          const end = nl === -1 ? buf.length : nl + 1;
          this.hold(buf.subarray(i, end));
          i = end;
          if (nl !== -1) this.onLine();
          break;
        }
        case "data": {
          const n = Math.min(this.remaining, buf.length - i);
          const piece = buf.subarray(i, i + n);
          this.chunkHash?.update(piece);
          for (const c of this.checks) c.digest.update(piece);
          for (const c of this.trailerChecks.values()) c.digest.update(piece);
          this.push(piece);
          i += n;
          this.remaining -= n;
          this.decoded += n;
          if (this.remaining === 0) {
            this.verifyChunk();
            this.state = "dataEnd";
            this.crlfSeen = 0;
          }
          break;
        }
        case "dataEnd": {
          if (buf[i] !== (this.crlfSeen === 0 ? 0x0d : 0x0a)) throw framing("chunk data is not followed by CRLF (is the chunk size right?)");
          i++;
          if (++this.crlfSeen === 2) this.state = "size";
          break;
        }
        case "done":
          throw framing("data follows the end of the body");
      }
    }
  }

  private hold(piece: Buffer): void {
    this.lineLen += piece.length;
    if (this.state === "trailer") {
      this.trailerBytes += piece.length;
      if (this.trailerBytes > MAX_TRAILER_BYTES) throw badTrailer("the trailer is too long");
    }
    if (this.lineLen > MAX_LINE) throw framing(this.state === "size" ? "a chunk header is too long" : "a trailer line is too long");
    // A copy, so a small line does not keep a large network buffer alive.
    this.line.push(Buffer.from(piece));
    this.maxHeld = Math.max(this.maxHeld, this.lineLen);
  }

  private onLine(): void {
    const line = Buffer.concat(this.line, this.lineLen);
    this.line = [];
    this.lineLen = 0;
    if (line.length < 2 || line[line.length - 2] !== 0x0d) throw framing("a line does not end in CRLF");
    const text = line.subarray(0, line.length - 2).toString("latin1");
    if (this.state === "size") this.onChunkHeader(text);
    else this.onTrailerLine(text);
  }

  private onChunkHeader(text: string): void {
    const [hex, ...ext] = text.split(";");
    if (!/^[0-9a-fA-F]{1,12}$/.test(hex!)) throw framing(`'${text.slice(0, 40)}' is not a chunk header`);
    const size = parseInt(hex!, 16);
    if (this.opts.signing) {
      const m = ext.length === 1 ? /^chunk-signature=([0-9a-f]{64})$/.exec(ext[0]!) : null;
      if (!m) throw framing("a chunk header lacks its chunk-signature");
      this.chunkSig = m[1]!;
      this.chunkHash = createHash("sha256");
    }
    const declared = this.opts.decodedLength;
    if (declared !== undefined && this.decoded + size > declared) {
      throw new S3AuthError("InvalidRequest", `The body decodes to more than x-amz-decoded-content-length (${declared}) bytes.`, 400);
    }
    if (size === 0) {
      this.verifyChunk();
      this.state = "trailer";
    } else {
      this.remaining = size;
      this.state = "data";
    }
  }

  private verifyChunk(): void {
    const s = this.opts.signing;
    if (!s || !this.chunkHash) return;
    const toSign = ["AWS4-HMAC-SHA256-PAYLOAD", s.date, s.scope, this.prevSig, EMPTY_SHA256, this.chunkHash.digest("hex")].join("\n");
    if (!sameHex(createHmac("sha256", s.signingKey).update(toSign).digest("hex"), this.chunkSig)) throw badSignature("chunk");
    this.prevSig = this.chunkSig;
    this.chunkHash = undefined;
  }

  private onTrailerLine(text: string): void {
    if (text === "") {
      this.state = "done";
      return;
    }
    const colon = text.indexOf(":");
    if (colon <= 0) throw badTrailer(`'${text.slice(0, 40)}' is not a header line`);
    const name = text.slice(0, colon).trim().toLowerCase();
    if (this.trailer.has(name)) throw badTrailer(`${name} is given twice`);
    if (this.trailer.size >= MAX_TRAILERS) throw badTrailer("too many trailing headers");
    this.trailer.set(name, text.slice(colon + 1).trim());
  }

  private finish(): void {
    // The JavaScript SDK ends a body without trailer as "0\r\n", leaving out the final empty line.
    if (this.state === "trailer" && this.lineLen === 0) this.state = "done";
    if (this.state !== "done") throw incomplete("The request body ended before the aws-chunked encoding was complete.");
    this.verifyTrailer();
    const declared = this.opts.decodedLength;
    if (declared !== undefined && this.decoded !== declared) {
      throw incomplete(`The body decoded to ${this.decoded} bytes, not the ${declared} of x-amz-decoded-content-length.`);
    }
    finishChecks([...this.checks, ...this.trailerChecks.values()]);
  }

  private verifyTrailer(): void {
    const s = this.opts.signing;
    if (s?.signedTrailer) {
      const given = this.trailer.get("x-amz-trailer-signature");
      if (given === undefined) throw badTrailer("x-amz-trailer-signature is missing");
      const canonical = [...this.trailer]
        .filter(([n]) => n !== "x-amz-trailer-signature")
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([n, v]) => `${n}:${v}\n`)
        .join("");
      const hash = createHash("sha256").update(canonical).digest("hex");
      const toSign = ["AWS4-HMAC-SHA256-TRAILER", s.date, s.scope, this.prevSig, hash].join("\n");
      if (!sameHex(createHmac("sha256", s.signingKey).update(toSign).digest("hex"), given.toLowerCase())) throw badSignature("trailer");
    } else if (s && this.trailer.size > 0) {
      // Unsigned values riding on a signed body would be believed for no reason.
      throw badTrailer("a body signed without a trailer carries trailing headers");
    }
    for (const name of this.opts.trailers) if (!this.trailer.has(name)) throw badTrailer(`${name} was announced in x-amz-trailer but not sent`);
    for (const [name, value] of this.trailer) {
      const alg = checksumAlgorithmOf(name);
      // Other trailers (and checksum algorithms not known here) carry nothing this module can check; they are accepted.
      if (alg === undefined) continue;
      const check = this.trailerChecks.get(name);
      if (!check) throw badTrailer(`${name} was not announced in x-amz-trailer`);
      if (!wellFormed(alg, value)) throw new S3AuthError("InvalidRequest", `Value for ${name} trailing header is invalid.`, 400);
      check.expected = value;
    }
  }
}

/** Passes a plain body through, checking its SHA-256 and any header checksums once it has all gone by. */
class PlainVerifier extends Transform {
  private readonly hash?: Hash;

  constructor(
    private readonly sha256hex: string | undefined,
    private readonly checks: BodyCheck[],
    private readonly failure?: S3AuthError,
  ) {
    super();
    if (sha256hex !== undefined) this.hash = createHash("sha256");
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.failure) return cb(this.failure);
    this.hash?.update(chunk);
    for (const c of this.checks) c.digest.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.failure) return cb(this.failure);
    if (this.hash && this.hash.digest("hex") !== this.sha256hex) {
      return cb(new S3AuthError("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.", 400));
    }
    try {
      finishChecks(this.checks);
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }
}

/**
 * A Transform that turns a verified request's body into the object's bytes and fails the stream with S3AuthError on
 * any mismatch: the payload hash, a chunk or trailer signature, the aws-chunked framing, x-amz-decoded-content-length,
 * Content-MD5 and x-amz-checksum-* (header or trailer). Bytes flow on before the end is checked, so the object may
 * only be committed once this stream has ended without error.
 */
export function bodyVerifier(v: Verified, req: SignedRequest): Transform {
  let checks: BodyCheck[] = [];
  let failure: S3AuthError | undefined;
  try {
    checks = headerChecks(req.headers);
  } catch (e) {
    if (!(e instanceof S3AuthError)) throw e;
    failure = e;
  }
  const p = v.payload;
  switch (p.kind) {
    case "unsigned":
      return new PlainVerifier(undefined, checks, failure);
    case "sha256":
      return new PlainVerifier(p.hex, checks, failure);
    case "streaming-signed":
      return new AwsChunkedDecoder({ signing: p, decodedLength: p.decodedLength, trailers: p.trailers, checks }, failure);
    case "streaming-unsigned-trailer":
      return new AwsChunkedDecoder({ decodedLength: p.decodedLength, trailers: p.trailers, checks }, failure);
  }
}
