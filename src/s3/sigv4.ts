/**
 * AWS Signature Version 4 for the S3 gateway, self-contained (node: built-ins only).
 *
 * Use: `const v = await verifySigV4(req, lookup)`; act on `v.query` (the parameters as signed); if the request has
 * a body, read it through `bodyVerifier(v, req)` and commit the object only once that stream has ended without
 * error, since bytes flow on before the checks at the end. An aws-chunked body comes out decoded; the stored
 * Content-Encoding should drop "aws-chunked". Every refusal is an S3AuthError carrying S3's code and status.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { S3AuthError } from "./errors.js";

export { S3AuthError } from "./errors.js";
export { bodyVerifier } from "./aws-chunked.js";

export interface SignedRequest {
  method: string;
  /** The path exactly as received on the wire, still URI-encoded. */
  rawPath: string;
  /** The query string exactly as received, without "?". */
  rawQuery: string;
  /** Node's IncomingHttpHeaders; passing `req.headersDistinct` keeps repeated headers apart, as SigV4 joins them with "," not ", ". */
  headers: Record<string, string | string[] | undefined>;
}

/** Returns the secret key for an access key id, or undefined when there is no such key. */
export type SecretLookup = (accessKeyId: string) => Promise<string | undefined>;

/** What a chunk or trailer signature of an aws-chunked body is computed with. */
export interface ChunkSigning {
  signingKey: Buffer;
  seedSignature: string;
  /** DATE/REGION/s3/aws4_request */
  scope: string;
  /** The request's timestamp, YYYYMMDDTHHMMSSZ. */
  date: string;
}

export interface StreamingBody {
  /** x-amz-decoded-content-length, when the client sent it: the object's length, checked at the end. */
  decodedLength?: number;
  /** Trailer header names announced in x-amz-trailer, lower-case. */
  trailers: string[];
}

export type Payload =
  | { kind: "unsigned" }
  | { kind: "sha256"; hex: string }
  | ({ kind: "streaming-signed"; signedTrailer: boolean } & ChunkSigning & StreamingBody)
  | ({ kind: "streaming-unsigned-trailer" } & StreamingBody);

export interface Verified {
  accessKeyId: string;
  /** The region of the credential scope, whatever it was. */
  region: string;
  presigned: boolean;
  signedHeaders: string[];
  /**
   * The query parameters, decoded the way the signature covered them. A raw "+" is read as a space unless only the
   * literal reading matched; use these pairs rather than a fresh parse so what is acted on is what was signed.
   */
  query: Array<[string, string]>;
  payload: Payload;
}

const ALGORITHM = "AWS4-HMAC-SHA256";
const MAX_SKEW_MS = 15 * 60 * 1000;
const MAX_EXPIRES_S = 604800;

const malformedHeader = (m: string) => new S3AuthError("AuthorizationHeaderMalformed", m, 400);
const malformedQuery = (m: string) => new S3AuthError("AuthorizationQueryParametersError", m, 400);

const sha256hex = (s: string | Buffer) => createHash("sha256").update(s).digest("hex");
const hmac = (key: Buffer | string, s: string) => createHmac("sha256", key).update(s, "utf8").digest();

/** RFC 3986 encoding as SigV4 wants it: only A-Z a-z 0-9 - _ . ~ are left alone, hex digits upper-case. */
export function awsUriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
}

function decode(s: string, plusIsSpace: boolean): string {
  try {
    return decodeURIComponent(plusIsSpace ? s.replace(/\+/g, " ") : s);
  } catch {
    throw new S3AuthError("InvalidArgument", "The request's query string or path has a malformed percent-encoding.", 400);
  }
}

/** Splits a raw query into decoded pairs; a name without "=" gets an empty value, empty segments are skipped. */
export function parseQuery(rawQuery: string, plusIsSpace = true): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (const seg of rawQuery.split("&")) {
    if (seg === "") continue;
    const eq = seg.indexOf("=");
    const name = eq === -1 ? seg : seg.slice(0, eq);
    const value = eq === -1 ? "" : seg.slice(eq + 1);
    pairs.push([decode(name, plusIsSpace), decode(value, plusIsSpace)]);
  }
  return pairs;
}

function canonicalQuery(pairs: Array<[string, string]>, skipSignature: boolean): string {
  const enc = pairs
    .filter(([n]) => !(skipSignature && n === "X-Amz-Signature"))
    .map(([n, v]) => [awsUriEncode(n), awsUriEncode(v)] as const);
  enc.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return enc.map(([n, v]) => `${n}=${v}`).join("&");
}

/**
 * S3 signs the path as sent, neither normalised nor encoded twice. A client that sent characters unencoded which
 * it had encoded when signing (or the reverse) is still understood through a second reading: the path decoded
 * segment by segment and re-encoded strictly. Both readings decode to the same key.
 */
function pathCandidates(rawPath: string): string[] {
  const raw = rawPath === "" ? "/" : rawPath;
  const out = [raw];
  try {
    const strict = raw.split("/").map((seg) => awsUriEncode(decodeURIComponent(seg))).join("/");
    if (strict !== raw) out.push(strict);
  } catch {
    // An undecodable path can only have been signed as sent.
  }
  return out;
}

function header(req: SignedRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(",") : v;
}

function canonicalHeaderValue(req: SignedRequest, name: string): string {
  // HTTP/2 carries the host as :authority.
  const v = header(req, name) ?? (name === "host" ? header(req, ":authority") : undefined) ?? "";
  return v.replace(/[ \t]+/g, " ").trim();
}

function parseAmzDate(s: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return undefined;
  const [y, mo, d, h, mi, se] = m.slice(1).map(Number) as [number, number, number, number, number, number];
  const t = Date.UTC(y, mo - 1, d, h, mi, se);
  const back = new Date(t);
  // Date.UTC rolls 2024-02-31 over into March; such a date is not a date.
  return back.getUTCDate() === d && back.getUTCMonth() === mo - 1 && h < 24 && mi < 60 && se < 60 ? t : undefined;
}

function formatAmzDate(t: number): string {
  return new Date(t).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

interface Scope {
  accessKeyId: string;
  day: string;
  region: string;
  scope: string;
}

function parseCredential(cred: string, fail: (m: string) => S3AuthError, wantRegion: string | undefined): Scope {
  const parts = cred.split("/");
  if (parts.length !== 5 || parts.some((p) => p === "")) throw fail(`The credential '${cred}' is not of the form AKID/DATE/REGION/s3/aws4_request.`);
  const [accessKeyId, day, region, service, terminal] = parts as [string, string, string, string, string];
  if (!/^\d{8}$/.test(day)) throw fail(`The credential date '${day}' is not of the form YYYYMMDD.`);
  if (service !== "s3") throw fail(`The credential names the service '${service}'; expecting 's3'.`);
  if (terminal !== "aws4_request") throw fail(`The credential ends in '${terminal}'; expecting 'aws4_request'.`);
  if (wantRegion !== undefined && region !== wantRegion) throw fail(`The region '${region}' is wrong; expecting '${wantRegion}'.`);
  return { accessKeyId, day, region, scope: `${day}/${region}/s3/aws4_request` };
}

function parseSignedHeaders(list: string, fail: (m: string) => S3AuthError): string[] {
  const names = list.split(";");
  if (names.some((n) => !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(n)) || new Set(names).size !== names.length) {
    throw fail(`SignedHeaders '${list}' is not a list of distinct lower-case header names.`);
  }
  if (!names.includes("host")) throw fail("SignedHeaders must include host.");
  return names;
}

function checkAllAmzHeadersSigned(req: SignedRequest, signed: readonly string[]): void {
  // An unsigned x-amz-* header (metadata, copy source, decoded length...) could be added by anyone in the path.
  const unsigned = Object.keys(req.headers).filter((n) => n.startsWith("x-amz-") && req.headers[n] !== undefined && !signed.includes(n));
  if (unsigned.length > 0) {
    throw new S3AuthError("AccessDenied", `There were headers present in the request which were not signed: ${unsigned.join(", ")}`, 403);
  }
}

function signingKey(secret: string, s: Scope): Buffer {
  return hmac(hmac(hmac(hmac(`AWS4${secret}`, s.day), s.region), "s3"), "aws4_request");
}

interface Candidate {
  query: Array<[string, string]>;
  canonicalQuery: string;
}

function queryCandidates(rawQuery: string, presigned: boolean): Candidate[] {
  const readings = [parseQuery(rawQuery, true)];
  // A literal "+" is what RFC 3986 clients mean; form-encoding clients mean a space. Try the latter first.
  if (rawQuery.includes("+")) readings.push(parseQuery(rawQuery, false));
  return readings.map((query) => ({ query, canonicalQuery: canonicalQuery(query, presigned) }));
}

/** Finds the reading of path and query whose signature matches, comparing in constant time. */
function matchSignature(
  req: SignedRequest,
  presigned: boolean,
  signed: readonly string[],
  payloadHash: string,
  date: string,
  scope: Scope,
  key: Buffer,
  given: string,
): Candidate {
  const headers = signed.map((n) => `${n}:${canonicalHeaderValue(req, n)}\n`).join("");
  const givenBuf = Buffer.from(given.toLowerCase(), "latin1");
  let found: Candidate | undefined;
  for (const path of pathCandidates(req.rawPath)) {
    for (const q of queryCandidates(req.rawQuery, presigned)) {
      const canonical = [req.method.toUpperCase(), path, q.canonicalQuery, headers, signed.join(";"), payloadHash].join("\n");
      const toSign = [ALGORITHM, date, scope.scope, sha256hex(canonical)].join("\n");
      const sig = Buffer.from(hmac(key, toSign).toString("hex"), "latin1");
      if (timingSafeEqual(sig, givenBuf) && found === undefined) found = q;
    }
  }
  if (!found) {
    throw new S3AuthError("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.", 403);
  }
  return found;
}

async function secretFor(lookup: SecretLookup, akid: string): Promise<string> {
  const secret = await lookup(akid);
  if (secret === undefined) throw new S3AuthError("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.", 403);
  return secret;
}

function streamingBody(req: SignedRequest): StreamingBody {
  const len = header(req, "x-amz-decoded-content-length");
  if (len !== undefined && !/^\d{1,15}$/.test(len.trim())) throw new S3AuthError("InvalidArgument", "x-amz-decoded-content-length is not a length.", 400);
  const trailers = (header(req, "x-amz-trailer") ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== "");
  return { decodedLength: len === undefined ? undefined : Number(len.trim()), trailers };
}

async function verifyHeaderAuth(req: SignedRequest, auth: string, lookup: SecretLookup, now: number, region: string | undefined): Promise<Verified> {
  const m = /^AWS4-HMAC-SHA256(?:\s+(.*))?$/s.exec(auth.trim());
  if (!m) {
    if (/^AWS\s/.test(auth.trim())) {
      throw new S3AuthError("InvalidRequest", "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.", 400);
    }
    throw malformedHeader("The authorization header is malformed; it must start with AWS4-HMAC-SHA256.");
  }
  const fields = new Map<string, string>();
  for (const part of (m[1] ?? "").split(",")) {
    const eq = part.indexOf("=");
    const k = eq === -1 ? part.trim() : part.slice(0, eq).trim();
    if (eq === -1 || fields.has(k)) throw malformedHeader(`The authorization header is malformed near '${part.trim()}'.`);
    fields.set(k, part.slice(eq + 1).trim());
  }
  const cred = fields.get("Credential");
  const list = fields.get("SignedHeaders");
  const given = fields.get("Signature");
  if (cred === undefined || list === undefined || given === undefined || fields.size !== 3) {
    throw malformedHeader("The authorization header must have exactly Credential, SignedHeaders and Signature.");
  }
  if (!/^[0-9a-fA-F]{64}$/.test(given)) throw malformedHeader("The signature is not 64 hexadecimal digits.");
  const scope = parseCredential(cred, malformedHeader, region);
  const signed = parseSignedHeaders(list, malformedHeader);

  const amz = header(req, "x-amz-date");
  const dateName = amz !== undefined ? "x-amz-date" : "date";
  const rawDate = amz ?? header(req, "date");
  if (rawDate === undefined) throw new S3AuthError("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", 403);
  const t = amz !== undefined ? parseAmzDate(amz.trim()) : Date.parse(rawDate);
  if (t === undefined || Number.isNaN(t)) throw new S3AuthError("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", 403);
  if (!signed.includes(dateName)) throw malformedHeader(`SignedHeaders must include ${dateName}.`);
  const date = formatAmzDate(t);
  if (Math.abs(now - t) > MAX_SKEW_MS) {
    throw new S3AuthError("RequestTimeTooSkewed", "The difference between the request time and the current time is too large.", 403);
  }
  if (scope.day !== date.slice(0, 8)) throw malformedHeader(`Invalid credential date '${scope.day}'. It is not the date of the request.`);
  checkAllAmzHeadersSigned(req, signed);

  const contentSha = header(req, "x-amz-content-sha256")?.trim();
  if (contentSha === undefined) throw new S3AuthError("InvalidRequest", "Missing required header for this request: x-amz-content-sha256", 400);

  const key = signingKey(await secretFor(lookup, scope.accessKeyId), scope);
  const streamingKinds = ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"];
  if (contentSha !== "UNSIGNED-PAYLOAD" && !streamingKinds.includes(contentSha) && !/^[0-9a-fA-F]{64}$/.test(contentSha)) {
    throw new S3AuthError("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* value, or a valid sha256 value.", 400);
  }
  const match = matchSignature(req, false, signed, contentSha, date, scope, key, given);

  let payload: Payload;
  if (contentSha === "UNSIGNED-PAYLOAD") payload = { kind: "unsigned" };
  else if (contentSha === "STREAMING-UNSIGNED-PAYLOAD-TRAILER") payload = { kind: "streaming-unsigned-trailer", ...streamingBody(req) };
  else if (contentSha.startsWith("STREAMING-")) {
    payload = {
      kind: "streaming-signed",
      signedTrailer: contentSha.endsWith("-TRAILER"),
      signingKey: key,
      seedSignature: given.toLowerCase(),
      scope: scope.scope,
      date,
      ...streamingBody(req),
    };
  } else payload = { kind: "sha256", hex: contentSha.toLowerCase() };
  return { accessKeyId: scope.accessKeyId, region: scope.region, presigned: false, signedHeaders: signed, query: match.query, payload };
}

async function verifyPresigned(req: SignedRequest, lookup: SecretLookup, now: number, region: string | undefined): Promise<Verified> {
  const params = new Map<string, string>();
  for (const [n, v] of parseQuery(req.rawQuery)) {
    if (!n.startsWith("X-Amz-")) continue;
    if (params.has(n)) throw malformedQuery(`The query parameter ${n} is given more than once.`);
    params.set(n, v);
  }
  const need = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires"];
  const [alg, cred, given, rawDate, list, expires] = need.map((n) => params.get(n)) as Array<string | undefined>;
  if ([alg, cred, given, rawDate, list, expires].some((v) => v === undefined)) {
    throw malformedQuery(`Query-string authentication version 4 requires the ${need.join(", ")} parameters.`);
  }
  if (alg !== ALGORITHM) throw malformedQuery(`X-Amz-Algorithm only supports "${ALGORITHM}".`);
  if (!/^[0-9a-fA-F]{64}$/.test(given!)) throw malformedQuery("X-Amz-Signature is not 64 hexadecimal digits.");
  const scope = parseCredential(cred!, malformedQuery, region);
  const signed = parseSignedHeaders(list!, malformedQuery);
  const t = parseAmzDate(rawDate!);
  if (t === undefined) throw malformedQuery("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\".");
  if (!/^\d{1,7}$/.test(expires!)) throw malformedQuery("X-Amz-Expires should be a number of seconds.");
  if (Number(expires) > MAX_EXPIRES_S) throw malformedQuery(`X-Amz-Expires must be less than a week (in seconds) that is; ${MAX_EXPIRES_S}.`);
  if (scope.day !== rawDate!.slice(0, 8)) throw malformedQuery(`Invalid credential date '${scope.day}'. It is not the date of X-Amz-Date.`);
  if (t - now > MAX_SKEW_MS) throw new S3AuthError("AccessDenied", "Request is not valid yet", 403);
  if (now > t + Number(expires) * 1000) throw new S3AuthError("AccessDenied", "Request has expired", 403);
  checkAllAmzHeadersSigned(req, signed);

  // The SDKs hoist x-amz-content-sha256=UNSIGNED-PAYLOAD into the query (in whatever case); absent, the payload is unsigned.
  const contentSha = parseQuery(req.rawQuery).find(([n]) => n.toLowerCase() === "x-amz-content-sha256")?.[1] ?? "UNSIGNED-PAYLOAD";
  if (contentSha !== "UNSIGNED-PAYLOAD" && !/^[0-9a-fA-F]{64}$/.test(contentSha)) {
    throw malformedQuery("A presigned request's payload must be UNSIGNED-PAYLOAD or a sha256 value.");
  }
  const key = signingKey(await secretFor(lookup, scope.accessKeyId), scope);
  const match = matchSignature(req, true, signed, contentSha, rawDate!, scope, key, given!);
  const payload: Payload = contentSha === "UNSIGNED-PAYLOAD" ? { kind: "unsigned" } : { kind: "sha256", hex: contentSha.toLowerCase() };
  return {
    accessKeyId: scope.accessKeyId,
    region: scope.region,
    presigned: true,
    signedHeaders: signed,
    query: match.query.filter(([n]) => n !== "X-Amz-Signature"),
    payload,
  };
}

/**
 * Verifies a request's AWS Signature Version 4, from the Authorization header or a presigned URL's query, and says how
 * its body is to be checked (see bodyVerifier). `opts.region`, when given, is the only region accepted in the scope.
 */
export async function verifySigV4(req: SignedRequest, lookup: SecretLookup, opts: { now?: number; region?: string } = {}): Promise<Verified> {
  const now = opts.now ?? Date.now();
  const auth = header(req, "authorization");
  const queryAuth = /(^|&)X-Amz-Algorithm=/.test(req.rawQuery);
  if (auth !== undefined && queryAuth) throw new S3AuthError("InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified", 400);
  if (auth !== undefined) return verifyHeaderAuth(req, auth, lookup, now, opts.region);
  if (queryAuth) return verifyPresigned(req, lookup, now, opts.region);
  throw new S3AuthError("AccessDenied", "Access Denied", 403);
}
