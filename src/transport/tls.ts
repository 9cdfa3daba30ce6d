import type { TLSSocket, PeerCertificate } from "node:tls";

/** PEM material of one node: the cluster CA and this node's certificate and key. */
export interface TlsMaterial {
  ca: string;
  cert: string;
  key: string;
}

export interface CertIdentity {
  role: string;
  name: string;
}

/** The role (OU) and name (CN) the cluster CA vouched for. */
export function peerIdentity(socket: TLSSocket): CertIdentity | undefined {
  const cert: PeerCertificate | undefined = socket.getPeerCertificate?.();
  if (!cert || !cert.subject) return undefined;
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  const role = first(cert.subject.OU);
  const name = first(cert.subject.CN);
  if (!role || !name) return undefined;
  return { role, name };
}

/** Turns socket and TLS failures into a cause a person can act on. */
export function describeConnectError(err: NodeJS.ErrnoException): string {
  const code = err.code ?? "";
  if (code === "ECONNREFUSED") return "connection refused (is the node running on that port?)";
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return "host name not found";
  if (code === "ETIMEDOUT" || /timed out/i.test(err.message)) return "connection timed out (is the node overloaded or frozen?)";
  if (code === "ECONNRESET" || /alert|certificate required|handshake/i.test(err.message)) {
    return `TLS handshake refused (${err.message}); are both nodes' certificates from the same \`dfs certs init\`?`;
  }
  if (/certificate|self.signed|verify/i.test(err.message) || code.startsWith("ERR_TLS") || code.includes("CERT")) {
    return `certificate not trusted (${err.message}); are both nodes' certificates from the same \`dfs certs init\`?`;
  }
  return err.message || code || "unknown error";
}
