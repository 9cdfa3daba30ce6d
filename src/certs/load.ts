import { X509Certificate as NodeX509, createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { DfsError } from "../protocol/errors.js";

/** The roles a certificate can grant; the TLS layer authorizes a peer by the OU of its subject. */
export const ROLES = ["directory", "lock", "storage", "client"] as const;
export type Role = (typeof ROLES)[number];

/** PEM text of the cluster CA and of one node's certificate and private key. */
export interface CertMaterial {
  ca: string;
  cert: string;
  key: string;
}

// Names become file names, so anything that could climb out of the folder or hide a file is refused.
const NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** Throws BAD_REQUEST unless `name` can safely be a certificate file name. */
export function assertName(name: unknown): asserts name is string {
  if (typeof name !== "string" || !NAME_RE.test(name) || /^\.+$/.test(name)) {
    throw new DfsError(
      "BAD_REQUEST",
      `bad certificate name ${JSON.stringify(name)}; use 1-64 letters, digits, dots, dashes or underscores`,
    );
  }
  // NAME.key next to ca.key: issuing "ca" would overwrite the CA's own key.
  if (name === "ca") throw new DfsError("BAD_REQUEST", `the name "ca" is taken by the cluster CA; pick another name`);
}

/** Throws BAD_REQUEST unless `role` is one of {@link ROLES}. */
export function assertRole(role: unknown): asserts role is Role {
  if (typeof role !== "string" || !(ROLES as readonly string[]).includes(role)) {
    throw new DfsError("BAD_REQUEST", `unknown role ${JSON.stringify(role)}; roles are ${ROLES.join(", ")}`);
  }
}

// What makes a missing file: init makes the CA (and the role-named certificates), issue makes one more
// from an existing CA; init alone would refuse there, since the CA already exists.
function fixFor(dir: string, name: string | undefined): string {
  if (name === undefined) return `run \`dfs certs init --dir ${dir}\``;
  const role = (ROLES as readonly string[]).includes(name) ? name : "<role>";
  return `run \`dfs certs issue --dir ${dir} --role ${role} --name ${name}\` (or \`dfs certs init --dir ${dir} --force\` for a new CA)`;
}

// A bad pair is fixed by reissuing just that certificate; `init --force` would replace the CA under every node.
function reissue(dir: string, name: string): string {
  const role = (ROLES as readonly string[]).includes(name) ? name : "<role>";
  return `run \`dfs certs issue --dir ${dir} --role ${role} --name ${name} --force\``;
}

/**
 * Reads a PEM file of `dir` with the NOT_FOUND/BAD_REQUEST wording of {@link loadCerts}.
 * @param fix what to tell the user when the file is missing
 */
export function readPem(dir: string, file: string, fix: string): string {
  const full = path.join(dir, file);
  try {
    return readFileSync(full, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      throw new DfsError("NOT_FOUND", `${full} not found; ${fix}`, { cause: err });
    }
    throw new DfsError("BAD_REQUEST", `cannot read ${full}: ${(err as Error).message}`, { cause: err });
  }
}

function parseCert(pem: string, file: string): NodeX509 {
  try {
    return new NodeX509(pem);
  } catch (err) {
    throw new DfsError("BAD_REQUEST", `${file} is not a PEM certificate (${(err as Error).message})`, { cause: err });
  }
}

function parseKey(pem: string, file: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new DfsError("BAD_REQUEST", `${file} is not a PEM private key (${(err as Error).message})`, { cause: err });
  }
}

/**
 * Reads `dir/ca.crt`, `dir/NAME.crt` and `dir/NAME.key` for a node to present and trust.
 *
 * Checks here rather than in the TLS handshake, where a mismatch would surface as an opaque
 * alert on the other node.
 * @throws DfsError NOT_FOUND naming the missing file and the `dfs certs` command that makes it;
 *   BAD_REQUEST when a file is unreadable, not PEM, or the key/CA does not belong to the certificate.
 */
export function loadCerts(dir: string, name: string): CertMaterial {
  assertName(name);
  const caFile = path.join(dir, "ca.crt");
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  const ca = readPem(dir, "ca.crt", fixFor(dir, undefined));
  const cert = readPem(dir, `${name}.crt`, fixFor(dir, name));
  const key = readPem(dir, `${name}.key`, fixFor(dir, name));
  const caCert = parseCert(ca, caFile);
  const leaf = parseCert(cert, certFile);
  const privateKey = parseKey(key, keyFile);
  const spki = (k: KeyObject) => k.export({ type: "spki", format: "der" });
  if (!spki(createPublicKey(privateKey)).equals(spki(leaf.publicKey))) {
    throw new DfsError("BAD_REQUEST", `${keyFile} is not the key of ${certFile}; ${reissue(dir, name)}`);
  }
  if (!leaf.verify(caCert.publicKey)) {
    throw new DfsError(
      "BAD_REQUEST",
      `${certFile} was not issued by ${caFile}; ${reissue(dir, name)}, or copy in the matching ca.crt`,
    );
  }
  return { ca, cert, key };
}

/**
 * The role (subject OU) and name (subject CN) a certificate carries.
 * @param pem a PEM certificate, or its DER bytes
 * @throws DfsError BAD_REQUEST if it is not a certificate or lacks OU/CN.
 */
export function certIdentity(pem: string | Uint8Array): { role: string; name: string } {
  let cert: NodeX509;
  try {
    cert = new NodeX509(pem);
  } catch (err) {
    throw new DfsError("BAD_REQUEST", `not a certificate (${(err as Error).message})`, { cause: err });
  }
  // Node's parser, not the certificate library of `certs init`: every process reads certificates, and that
  // library's classes made up a fifth of a storage node's heap, which its collector marks again and again.
  const field = (key: string) => cert.subject.split("\n").find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
  const role = field("OU");
  const name = field("CN");
  if (!role || !name) throw new DfsError("BAD_REQUEST", `certificate subject "${cert.subject.replace(/\n/g, ", ")}" carries no OU role and CN name`);
  return { role, name };
}
