import type { IncomingMessage } from "node:http";
import type { TLSSocket } from "node:tls";
import { WebSocket } from "ws";
import { DfsError } from "../protocol/errors.js";
import type { Logger } from "../log.js";
import type { Router } from "./actor.js";
import { Channel } from "./channel.js";
import type { HeartbeatOptions } from "./heartbeat.js";
import type { InflightLimits } from "./inflight.js";
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
  /** Bound on opening the connection (TCP, TLS and WebSocket handshakes); default 10 s, then UNAVAILABLE. */
  timeoutMs?: number;
  /** Aborting fails the attempt CANCELLED. */
  signal?: AbortSignal;
  /** Default {@link CONTROL_HEARTBEAT}; {@link Pool} uses {@link DATA_HEARTBEAT}. */
  heartbeat?: HeartbeatOptions;
  /** Work the server may have in flight with us (requests it sent back) before we stop reading. */
  inflight?: InflightLimits;
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
  const timeoutMs = init.timeoutMs ?? 10_000;
  return new Promise<Channel>((resolve, reject) => {
    const ws = new WebSocket(url, {
      ca: init.tls.ca,
      cert: init.tls.cert,
      key: init.tls.key,
      minVersion: "TLSv1.3",
      handshakeTimeout: timeoutMs,
      maxPayload: init.maxPayload ?? DEFAULT_MAX_PAYLOAD,
      perMessageDeflate: false,
      // Masking guards plaintext proxies against forged frames; inside TLS it is pure cost (a copy and an
      // XOR pass over every byte on both sides), and ws skips both for an all-zero mask.
      generateMask: (mask: Buffer) => void mask.fill(0),
    });
    let serverSocket: TLSSocket | undefined;
    let settled = false;
    const fail = (cause: string, err?: unknown) => finish(new DfsError("UNAVAILABLE", `cannot reach ${what} at ${url}: ${cause}`, { cause: err }));
    const finish = (err: DfsError) => {
      if (settled) return;
      settled = true;
      cleanup();
      // Terminating a handshake in progress emits one more error, which must not go unheard.
      ws.on("error", () => {});
      ws.terminate();
      reject(err);
    };
    const onAbort = () => finish(new DfsError("CANCELLED", `connecting to ${what} at ${url} was cancelled`, { cause: init.signal?.reason }));
    // ws's handshakeTimeout is a socket idle timeout (against a frozen server it fired only after about twice
    // its value); this timer bounds the whole attempt.
    const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms (is the node overloaded or frozen?)`), timeoutMs);
    const cleanup = () => {
      clearTimeout(timer);
      init.signal?.removeEventListener("abort", onAbort);
    };
    if (init.signal?.aborted) return onAbort();
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
      resolve(new Channel({
        socket: ws, stream: serverSocket, ...who, remote: url, router: init.router, log: init.log,
        heartbeat: init.heartbeat, inflight: init.inflight,
      }));
    });
  });
}
