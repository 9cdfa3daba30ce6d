import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import test, { type TestContext } from "node:test";
import tls from "node:tls";
import { certIdentity, initCerts, issueCert, loadCerts, ROLES, type CertMaterial } from "../src/certs/index.js";
import { DfsError } from "../src/protocol/errors.js";

const ALL_FILES = ["ca.crt", "ca.key", ...ROLES.flatMap((r) => [`${r}.crt`, `${r}.key`])];

function tempDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dfs-certs-"));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function isCode(code: string, text?: string) {
  return (err: unknown) => {
    assert.ok(err instanceof DfsError, `expected a DfsError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (text) assert.ok(err.message.includes(text), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(text)}`);
    return true;
  };
}

/** A mutual-TLS 1.3 server on 127.0.0.1 that reports what it saw of each client. */
async function mtlsServer(t: TestContext, material: CertMaterial) {
  const sockets = new Set<tls.TLSSocket>();
  const seen: { authorized: boolean; ou: unknown }[] = [];
  const clientErrors: Error[] = [];
  const server = tls.createServer(
    { ...material, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" },
    (socket) => {
      seen.push({ authorized: socket.authorized, ou: socket.getPeerCertificate().subject?.OU });
      socket.end("ok");
    },
  );
  server.on("connection", (s: tls.TLSSocket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  server.on("tlsClientError", (err) => clientErrors.push(err));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  const { port } = server.address() as { port: number };
  return { port, seen, clientErrors };
}

/** Connects with a client certificate and collects everything the server sends until the socket closes. */
function connectClient(port: number, material: CertMaterial): Promise<{ data: string; error?: Error }> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ...material, minVersion: "TLSv1.3" });
    let data = "";
    let error: Error | undefined;
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => (data += chunk));
    socket.on("error", (err) => (error = err));
    socket.on("close", () => resolve({ data, error }));
    socket.setTimeout(5000, () => socket.destroy(new Error("timed out")));
  });
}

test("initCerts writes a CA and one verifiable certificate per role", async (t) => {
  const dir = path.join(tempDir(t), "certs");
  const files = await initCerts({ dir });
  assert.deepEqual([...files].sort(), [...ALL_FILES].sort());
  assert.deepEqual(fs.readdirSync(dir).sort(), [...ALL_FILES].sort());

  const ca = new crypto.X509Certificate(fs.readFileSync(path.join(dir, "ca.crt")));
  assert.equal(ca.ca, true);
  assert.match(ca.subject, /CN=dfs cluster CA/);
  for (const role of ROLES) {
    const pem = fs.readFileSync(path.join(dir, `${role}.crt`), "utf8");
    assert.deepEqual(certIdentity(pem), { role, name: role });
    const cert = new crypto.X509Certificate(pem);
    assert.deepEqual(certIdentity(cert.raw), { role, name: role }, "DER works too");
    assert.equal(cert.ca, false);
    assert.ok(cert.verify(ca.publicKey), `${role}.crt is signed by the CA`);
    assert.equal(cert.checkIssued(ca), true);
    assert.equal(cert.checkHost("localhost"), "localhost");
    assert.equal(cert.checkIP("127.0.0.1"), "127.0.0.1");
    assert.equal(cert.checkIP("::1"), "::1");
    assert.ok(new Date(cert.validFrom).getTime() < Date.now(), "valid already, despite clock skew");
    assert.equal(crypto.createPrivateKey(fs.readFileSync(path.join(dir, `${role}.key`))).asymmetricKeyType, "ec");
  }
  assert.match(fs.readFileSync(path.join(dir, "client.key"), "utf8"), /^-----BEGIN PRIVATE KEY-----/);
  if (process.platform !== "win32") {
    assert.equal(fs.statSync(path.join(dir, "ca.key")).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.join(dir, "client.key")).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.join(dir, "client.crt")).mode & 0o777, 0o644);
  }
});

test("a real mutual TLS 1.3 connection carries the client's role", async (t) => {
  const dir = tempDir(t);
  await initCerts({ dir });
  const server = await mtlsServer(t, loadCerts(dir, "directory"));
  const result = await connectClient(server.port, loadCerts(dir, "client"));
  assert.equal(result.error, undefined);
  assert.equal(result.data, "ok");
  assert.deepEqual(server.seen, [{ authorized: true, ou: "client" }]);
  assert.deepEqual(server.clientErrors, []);
});

test("a client certificate from another CA is refused by the handshake", async (t) => {
  const ours = tempDir(t);
  const theirs = tempDir(t);
  await initCerts({ dir: ours });
  await initCerts({ dir: theirs });
  const server = await mtlsServer(t, loadCerts(ours, "directory"));
  const foreign = loadCerts(theirs, "client");
  // The stranger trusts our server, so only the server's check of the client certificate is under test.
  const result = await connectClient(server.port, { ...foreign, ca: loadCerts(ours, "client").ca });
  // Node's server drops the socket after a failed client verify (no alert), so the client may only see a close.
  assert.equal(result.data, "", "the server sent nothing");
  assert.deepEqual(server.seen, [], "the server never accepted the connection");
  assert.equal(server.clientErrors.length, 1);
  // The same server still takes a client of its own CA, so the refusal was about the certificate.
  assert.equal((await connectClient(server.port, loadCerts(ours, "client"))).data, "ok");
  assert.deepEqual(server.seen, [{ authorized: true, ou: "client" }]);
});

test("initCerts refuses to replace a CA unless forced", async (t) => {
  const dir = tempDir(t);
  await initCerts({ dir });
  const before = fs.readFileSync(path.join(dir, "ca.crt"), "utf8");
  await assert.rejects(initCerts({ dir }), isCode("EXISTS", "--force"));
  assert.equal(fs.readFileSync(path.join(dir, "ca.crt"), "utf8"), before);
  const files = await initCerts({ dir, force: true });
  assert.equal(files.length, 10);
  assert.notEqual(fs.readFileSync(path.join(dir, "ca.crt"), "utf8"), before);
  loadCerts(dir, "storage"); // the replaced certificates match the replaced CA
});

test("issueCert makes a named certificate that loadCerts returns", async (t) => {
  const dir = tempDir(t);
  await initCerts({ dir });
  const files = await issueCert({ dir, role: "storage", name: "storage-box7", hosts: ["box7.example", "10.1.2.3"] });
  assert.deepEqual(files, ["storage-box7.crt", "storage-box7.key"]);
  const material = loadCerts(dir, "storage-box7");
  assert.deepEqual(certIdentity(material.cert), { role: "storage", name: "storage-box7" });
  assert.equal(material.ca, fs.readFileSync(path.join(dir, "ca.crt"), "utf8"));
  const cert = new crypto.X509Certificate(material.cert);
  assert.equal(cert.checkHost("box7.example"), "box7.example");
  assert.equal(cert.checkIP("10.1.2.3"), "10.1.2.3");
  assert.equal(cert.checkHost("localhost"), "localhost");

  await assert.rejects(issueCert({ dir, role: "storage", name: "storage-box7" }), isCode("EXISTS", "--force"));
  await issueCert({ dir, role: "client", name: "storage-box7", force: true });
  assert.equal(certIdentity(loadCerts(dir, "storage-box7").cert).role, "client");

  assert.throws(() => loadCerts(dir, "nobody"), isCode("NOT_FOUND", "dfs certs issue"));
  assert.throws(() => loadCerts(dir, "nobody"), isCode("NOT_FOUND", path.join(dir, "nobody.crt")));
  const empty = tempDir(t);
  assert.throws(() => loadCerts(empty, "client"), isCode("NOT_FOUND", "dfs certs init"));
  assert.throws(() => loadCerts(empty, "client"), isCode("NOT_FOUND", path.join(empty, "ca.crt")));
  await assert.rejects(issueCert({ dir: empty, role: "client", name: "x" }), isCode("NOT_FOUND", "dfs certs init"));
});

test("bad names, roles, hosts and files are refused", async (t) => {
  const dir = tempDir(t);
  await initCerts({ dir });
  for (const name of ["../x", "", "a/b", "x".repeat(65), "..", "ca", "sp ace"]) {
    await assert.rejects(issueCert({ dir, role: "client", name }), isCode("BAD_REQUEST"), name);
    assert.throws(() => loadCerts(dir, name), isCode("BAD_REQUEST"), name);
  }
  await assert.rejects(issueCert({ dir, role: "admin" as never, name: "x" }), isCode("BAD_REQUEST", "roles are"));
  await assert.rejects(issueCert({ dir, role: "client", name: "x", hosts: ["bad host!"] }), isCode("BAD_REQUEST"));
  assert.equal(fs.existsSync(path.join(dir, "x.crt")), false);

  fs.writeFileSync(path.join(dir, "lock.crt"), "not a certificate\n");
  assert.throws(() => loadCerts(dir, "lock"), isCode("BAD_REQUEST", path.join(dir, "lock.crt")));
  fs.copyFileSync(path.join(dir, "client.key"), path.join(dir, "storage.key"));
  assert.throws(() => loadCerts(dir, "storage"), isCode("BAD_REQUEST", path.join(dir, "storage.key")));
});
