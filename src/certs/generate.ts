import "reflect-metadata";
import { webcrypto, randomBytes } from "node:crypto";
import fs from "node:fs";
import { isIP } from "node:net";
import path from "node:path";
import * as x509 from "@peculiar/x509";
import { DfsError } from "../protocol/errors.js";
import { ROLES, assertName, assertRole, readPem, type Role } from "./load.js";

// Node's WebCrypto does the key generation and signing, so no openssl binary is needed on the host.
x509.cryptoProvider.set(webcrypto);

// tsconfig has no DOM lib, so the WebCrypto types come from node:crypto.
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

const KEY_ALG = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN_ALG = { name: "ECDSA", hash: "SHA-256" } as const;
const CA_SUBJECT = "CN=dfs cluster CA, O=dfs";
// Nodes whose clocks run a little behind must still accept a certificate made just now.
const SKEW_MS = 60 * 1000;
const DEFAULT_SANS: x509.JsonGeneralNames = [
  { type: "dns", value: "localhost" },
  { type: "ip", value: "127.0.0.1" },
  { type: "ip", value: "::1" },
];
const DNS_RE = /^(?=.{1,253}$)[A-Za-z0-9_*]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$/;

interface Signer {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

function tenYearsFrom(ms: number): Date {
  const d = new Date(ms);
  d.setUTCFullYear(d.getUTCFullYear() + 10);
  return d;
}

// Positive and without a leading zero byte, so every DER encoder reads the same 16-byte number.
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString("hex");
}

function subjectAltNames(hosts: readonly string[] | undefined): x509.JsonGeneralNames {
  const names = [...DEFAULT_SANS];
  const seen = new Set(names.map((n) => `${n.type}:${n.value}`));
  for (const raw of hosts ?? []) {
    const host = raw.trim().replace(/^\[(.*)\]$/, "$1");
    if (host === "") continue;
    let entry: x509.JsonGeneralName;
    if (isIP(host)) entry = { type: "ip", value: host };
    else if (DNS_RE.test(host)) entry = { type: "dns", value: host.toLowerCase().replace(/\.$/, "") };
    else throw new DfsError("BAD_REQUEST", `bad --host ${JSON.stringify(raw)}; give a DNS name or an IP address`);
    const id = `${entry.type}:${entry.value}`;
    if (!seen.has(id)) names.push(entry);
    seen.add(id);
  }
  return names;
}

async function newKeys(): Promise<CryptoKeyPair> {
  // Extractable only so the private key can be written out as PKCS#8 once.
  return webcrypto.subtle.generateKey(KEY_ALG, true, ["sign", "verify"]);
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

async function makeCa(): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> {
  const keys = await newKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: CA_SUBJECT,
    notBefore: new Date(now - SKEW_MS),
    notAfter: tenYearsFrom(now),
    signingAlgorithm: SIGN_ALG,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

async function makeLeaf(ca: Signer, role: Role, name: string, hosts: readonly string[] | undefined) {
  const keys = await newKeys();
  const now = Date.now();
  // A leaf that outlived its CA would only fail later with a more confusing error.
  const notAfter = new Date(Math.min(tenYearsFrom(now).getTime(), ca.cert.notAfter.getTime()));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${name}, OU=${role}, O=dfs`,
    issuer: ca.cert.subjectName,
    notBefore: new Date(now - SKEW_MS),
    notAfter,
    signingAlgorithm: SIGN_ALG,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension(subjectAltNames(hosts)),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert.publicKey),
    ],
  });
  return { cert: cert.toString("pem"), key: await keyPem(keys.privateKey) };
}

// Written beside the target and renamed over it, so a crash never leaves half a key and the mode
// is set before any content exists (umask or an older file's mode cannot widen it).
function writeFileAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    const fd = fs.openSync(tmp, "wx", mode);
    try {
      fs.fchmodSync(fd, mode);
      fs.writeFileSync(fd, text);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new DfsError("BAD_REQUEST", `cannot write ${file}: ${(err as Error).message}`, { cause: err });
  }
}

function makeDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw new DfsError("BAD_REQUEST", `cannot create folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
}

function writePair(dir: string, name: string, pair: { cert: string; key: string }): string[] {
  writeFileAtomic(path.join(dir, `${name}.key`), pair.key, 0o600);
  writeFileAtomic(path.join(dir, `${name}.crt`), pair.cert, 0o644);
  return [`${name}.crt`, `${name}.key`];
}

/**
 * Makes a new cluster CA and one certificate per role, named after the role, in `dir`.
 *
 * Refuses to replace an existing CA without `force`, because every node's certificate is
 * tied to it and would stop being trusted.
 * @param opts.hosts extra DNS names or IPs (besides localhost, 127.0.0.1, ::1) the certificates are valid for
 * @returns the file names written, relative to `dir`
 * @throws DfsError EXISTS if `dir` already holds ca.crt or ca.key and `force` is not set.
 */
export async function initCerts(opts: { dir: string; hosts?: string[]; force?: boolean }): Promise<string[]> {
  const { dir } = opts;
  const existing = ["ca.crt", "ca.key"].filter((f) => fs.existsSync(path.join(dir, f)));
  if (existing.length > 0 && !opts.force) {
    throw new DfsError(
      "EXISTS",
      `${path.join(dir, existing[0]!)} already exists; pass --force to replace the CA (every node then needs new certificates)`,
    );
  }
  subjectAltNames(opts.hosts); // refuse a bad --host before anything is written
  const ca = await makeCa();
  const signer: Signer = { cert: ca.cert, key: ca.keys.privateKey };
  const leaves = await Promise.all(ROLES.map((role) => makeLeaf(signer, role, role, opts.hosts)));
  makeDir(dir);
  // The key goes first: a ca.crt without its key would make the next init refuse for nothing useful.
  writeFileAtomic(path.join(dir, "ca.key"), await keyPem(ca.keys.privateKey), 0o600);
  writeFileAtomic(path.join(dir, "ca.crt"), ca.cert.toString("pem"), 0o644);
  const written = ["ca.crt", "ca.key"];
  ROLES.forEach((role, i) => written.push(...writePair(dir, role, leaves[i]!)));
  return written;
}

async function loadSigner(dir: string): Promise<Signer> {
  const certPem = readPem(dir, "ca.crt", `run \`dfs certs init --dir ${dir}\` first`);
  // Nodes normally hold ca.crt alone; only the machine that ran init has the key that signs.
  const keyPemText = readPem(
    dir,
    "ca.key",
    `issue certificates in the folder where \`dfs certs init\` wrote the CA key, or run \`dfs certs init --dir ${dir} --force\` for a new CA`,
  );
  try {
    const cert = new x509.X509Certificate(certPem);
    const key = await webcrypto.subtle.importKey(
      "pkcs8",
      x509.PemConverter.decodeFirst(keyPemText),
      KEY_ALG,
      false,
      ["sign"],
    );
    return { cert, key };
  } catch (err) {
    throw new DfsError(
      "BAD_REQUEST",
      `${path.join(dir, "ca.crt")} / ca.key are not a dfs CA (P-256 certificate and PKCS#8 key): ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/**
 * Issues `NAME.crt`/`NAME.key` for `role`, signed by the CA in `dir`, e.g. one per storage host.
 * @returns the file names written, relative to `dir`
 * @throws DfsError BAD_REQUEST for a bad name, role or host; NOT_FOUND when ca.crt/ca.key are
 *   missing (fix: run `dfs certs init`); EXISTS when NAME.crt exists and `force` is not set.
 */
export async function issueCert(opts: {
  dir: string;
  role: Role;
  name: string;
  hosts?: string[];
  force?: boolean;
}): Promise<string[]> {
  const { dir, role, name } = opts;
  assertRole(role);
  assertName(name);
  subjectAltNames(opts.hosts);
  const certFile = path.join(dir, `${name}.crt`);
  if (!opts.force && fs.existsSync(certFile)) {
    throw new DfsError("EXISTS", `${certFile} already exists; pass --force to replace it`);
  }
  const signer = await loadSigner(dir);
  return writePair(dir, name, await makeLeaf(signer, role, name, opts.hosts));
}
