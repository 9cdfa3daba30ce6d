import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { WebSocket } from "ws";
import { DfsError } from "../protocol/errors.js";
import type { Logger } from "../log.js";
import type { Router } from "./actor.js";
import { Channel } from "./channel.js";
import { DEFAULT_MAX_PAYLOAD } from "./server.js";
import { describeConnectError, peerIdentity, type TlsMaterial } from "./tls.js";

export interface ConnectInit {
  tls: TlsMaterial;
  log: Logger;
  /** Serves requests the other side sends back over this connection. */
  router?: Router;
  /** Certificate roles the server may hold; another is refused. */
  expectRoles?: readonly string[];
  /** What the node at the URL is, for error messages ("directory", "storage node"). */
  what?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  heartbeatMs?: number;
  maxPayload?: number;
}

/** Opens one mutually authenticated wss connection and wraps it in a Channel. */
export function connect(url: string, init: ConnectInit): Promise<Channel> {
  const what = init.what ?? "node";
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return Promise.reject(new DfsError("BAD_REQUEST", `${JSON.stringify(url)} is not a URL like wss://host:9000`));
  }
  if (parsed.protocol !== "wss:") {
    return Promise.reject(new DfsError("BAD_REQUEST", `${url} must start with wss:// (every dfs connection is TLS)`));
  }
  return new Promise<Channel>((resolve, reject) => {
    const ws = new WebSocket(url, {
      ca: init.tls.ca,
      cert: init.tls.cert,
      key: init.tls.key,
      minVersion: "TLSv1.3",
      handshakeTimeout: init.timeoutMs ?? 10_000,
      maxPayload: init.maxPayload ?? DEFAULT_MAX_PAYLOAD,
      perMessageDeflate: false,
      // Masking guards plaintext proxies against forged frames; inside TLS it is pure cost (a copy and an
      // XOR pass over every byte on both sides), and ws skips both for an all-zero mask.
      generateMask: (mask: Buffer) => void mask.fill(0),
    });
    let serverSocket: TLSSocket | undefined;
    let settled = false;
    const fail = (cause: string, err?: unknown) => {
      if (settled) return;
      settled = true;
      cleanup();
      ws.terminate();
      reject(new DfsError("UNAVAILABLE", `cannot reach ${what} at ${url}: ${cause}`, { cause: err }));
    };
    const onAbort = () => fail("aborted");
    const cleanup = () => init.signal?.removeEventListener("abort", onAbort);
    init.signal?.addEventListener("abort", onAbort, { once: true });
    ws.once("upgrade", (res: IncomingMessage) => (serverSocket = res.socket as TLSSocket));
    ws.once("error", (err: NodeJS.ErrnoException) => fail(describeConnectError(err), err));
    ws.once("unexpected-response", (_req, res) => fail(`HTTP ${res.statusCode} instead of a WebSocket (is that a dfs node?)`));
    ws.once("close", (code, reason) => fail(`closed during handshake (${code} ${reason.toString()})`));
    ws.once("open", () => {
      if (settled) return;
      const who = serverSocket ? peerIdentity(serverSocket) : undefined;
      if (!who) return fail("its certificate carries no role");
      if (init.expectRoles && !init.expectRoles.includes(who.role)) {
        return fail(`it is a ${who.role} node, expected ${init.expectRoles.join(" or ")}`);
      }
      settled = true;
      cleanup();
      ws.removeAllListeners("close");
      ws.removeAllListeners("error");
      resolve(new Channel({ socket: ws, ...who, remote: url, router: init.router, log: init.log, heartbeatMs: init.heartbeatMs }));
    });
  });
}
