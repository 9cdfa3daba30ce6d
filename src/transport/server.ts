import https from "node:https";
import type { TLSSocket } from "node:tls";
import { WebSocketServer, type WebSocket } from "ws";
import { DfsError } from "../protocol/errors.js";
import type { Logger } from "../log.js";
import type { Router } from "./actor.js";
import { Channel } from "./channel.js";
import type { HeartbeatOptions } from "./heartbeat.js";
import type { InflightLimits } from "./inflight.js";
import { peerIdentity, type TlsMaterial } from "./tls.js";

export interface ServerInit {
  host: string;
  port: number;
  tls: TlsMaterial;
  router: Router;
  log: Logger;
  /** Largest frame accepted; a larger one closes the connection (1009). Default 16 MiB + 1 MiB of envelope. */
  maxPayload?: number;
  maxConnections?: number;
  handshakeTimeoutMs?: number;
  /** Default {@link CONTROL_HEARTBEAT}: the server does not know what its peers are, so it is the tolerant one. */
  heartbeat?: HeartbeatOptions;
  /** Work one peer may have in flight with us before we stop reading its socket. */
  inflight?: InflightLimits;
}

/** Totals over a server's connections, for status pages and tests. */
export interface ServerStats {
  connections: number;
  /** Connections whose socket we are not reading right now. */
  paused: number;
  /** Requests and tells received and not yet answered, and their bytes (answers not yet written included). */
  requests: number;
  bytes: number;
}

export interface Server {
  readonly host: string;
  readonly port: number;
  /** wss://HOST:PORT, with the port actually bound. */
  readonly url: string;
  readonly connections: number;
  stats(): ServerStats;
  close(): Promise<void>;
}

export const DEFAULT_MAX_PAYLOAD = 17 * 1024 * 1024;

/** A wss endpoint that only admits peers holding a certificate from the cluster CA (TLS 1.3, mutual). */
export async function listen(init: ServerInit): Promise<Server> {
  const http = https.createServer({
    ca: init.tls.ca,
    cert: init.tls.cert,
    key: init.tls.key,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
    handshakeTimeout: init.handshakeTimeoutMs ?? 10_000,
  });
  http.maxConnections = init.maxConnections ?? 1024;
  http.on("tlsClientError", (err) => init.log.debug("tls handshake refused", { err: err.message }));
  http.on("request", (_req, res) => {
    res.writeHead(426, { "content-type": "text/plain" }).end("dfs speaks WebSocket only\n");
  });
  const wss = new WebSocketServer({ server: http, maxPayload: init.maxPayload ?? DEFAULT_MAX_PAYLOAD, perMessageDeflate: false });
  const channels = new Set<Channel>();
  wss.on("connection", (ws: WebSocket, req) => {
    const socket = req.socket as TLSSocket;
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    const who = peerIdentity(socket);
    if (!who) {
      init.log.warn("peer certificate names no role", { remote });
      ws.close(1008, "certificate carries no role");
      return;
    }
    const ch = new Channel({
      socket: ws, stream: socket, ...who, remote, router: init.router, log: init.log,
      heartbeat: init.heartbeat, inflight: init.inflight,
    });
    channels.add(ch);
    ch.onClose(() => channels.delete(ch));
  });
  wss.on("error", (err) => init.log.error("websocket server error", { err }));

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      if (err.code === "EADDRINUSE") reject(new DfsError("UNAVAILABLE", `port ${init.port} on ${init.host} is already in use; choose another with --port`));
      else if (err.code === "EACCES") reject(new DfsError("FORBIDDEN", `not allowed to listen on port ${init.port}; use a port above 1023`));
      else if (err.code === "EADDRNOTAVAIL") reject(new DfsError("UNAVAILABLE", `address ${init.host} is not on this machine`));
      else reject(new DfsError("UNAVAILABLE", `cannot listen on ${init.host}:${init.port}: ${err.message}`, { cause: err }));
    };
    http.once("error", onError);
    http.listen(init.port, init.host, () => {
      http.off("error", onError);
      resolve();
    });
  });
  const addr = http.address();
  const port = typeof addr === "object" && addr ? addr.port : init.port;
  const hostPart = init.host.includes(":") ? `[${init.host}]` : init.host;
  let closing: Promise<void> | undefined;
  return {
    host: init.host,
    port,
    url: `wss://${hostPart}:${port}`,
    get connections() {
      return channels.size;
    },
    stats() {
      const s: ServerStats = { connections: channels.size, paused: 0, requests: 0, bytes: 0 };
      for (const ch of channels) {
        const l = ch.load;
        if (l.paused) s.paused++;
        s.requests += l.requests;
        s.bytes += l.bytes;
      }
      return s;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close();
        http.close(() => resolve());
        http.closeAllConnections?.();
      });
      return closing;
    },
  };
}
