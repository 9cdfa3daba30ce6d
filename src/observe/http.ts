import { timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { TLSSocket } from "node:tls";
import { DfsError, toDfsError } from "../protocol/errors.js";
import type { Logger } from "../log.js";
import type { TlsMaterial } from "../transport/tls.js";
import { isLoopback, type HttpAddress } from "./address.js";
import type { Metrics } from "./metrics.js";
import { statusPage } from "./page.js";


export interface HttpInit {
  address: HttpAddress;
  /** The node's certificate, served over HTTPS when bound beyond loopback; client certificates are checked against its CA. */
  tls: TlsMaterial;
  /** A file holding the bearer token that opens the page and API to a browser without a client certificate. */
  tokenFile?: string;
  /** Serve /metrics without a certificate or token even when bound beyond loopback. */
  metricsOpen?: boolean;
  metrics: Metrics;
  /** Directory processes: the JSON API under /api/, null for a path it does not serve. */
  api?: (path: string, query: URLSearchParams) => Promise<unknown> | null;
  log: Logger;
}

export interface HttpServer {
  readonly url: string;
  close(): Promise<void>;
}

/**
 * The observability endpoint of a server process: /metrics, and on a directory the status page and its
 * API. On loopback it is plain HTTP for whoever can reach the machine's loopback; bound anywhere else it is
 * HTTPS with the node's certificate, and the page and API need a client certificate of the cluster CA or
 * the bearer token.
 */
export async function startHttp(init: HttpInit): Promise<HttpServer> {
  const { host, port } = init.address;
  const open = isLoopback(host);
  const token = init.tokenFile ? readToken(init.tokenFile) : undefined;
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    serve(init, req, res, open, token).catch((err: unknown) => {
      init.log.warn("http request failed", { url: req.url, err });
      if (!res.headersSent) send(res, 500, "application/json", JSON.stringify({ error: { code: "INTERNAL", message: "internal error" } }));
      else res.destroy();
    });
  };
  const server = open
    ? http.createServer(handle)
    : https.createServer({ cert: init.tls.cert, key: init.tls.key, ca: init.tls.ca, requestCert: true, rejectUnauthorized: false }, handle);
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(new DfsError("UNAVAILABLE", `--http ${host}:${port}: cannot listen (${err.code === "EADDRINUSE" ? "address in use" : err.message})`)));
    server.listen(port, host, resolve);
  });
  const bound = (server.address() as { port: number }).port;
  const url = `${open ? "http" : "https"}://${host.includes(":") ? `[${host}]` : host}:${bound}`;
  init.log.info("http ready", { url, auth: open ? "none (loopback)" : token ? "client certificate or token" : "client certificate" });
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

function readToken(file: string): Buffer {
  let text: string;
  try {
    text = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new DfsError("BAD_REQUEST", `--http-token-file ${file}: ${(err as Error).message}`);
  }
  if (text.length < 16) throw new DfsError("BAD_REQUEST", `--http-token-file ${file}: the token must be at least 16 characters`);
  return Buffer.from(text);
}

/**
 * A client certificate of the cluster CA, or the token: as a bearer token (scripts), or as the password of
 * HTTP Basic authentication with any user name, which is what a browser can be made to send.
 */
function authorized(req: IncomingMessage, token: Buffer | undefined): boolean {
  if ((req.socket as TLSSocket).authorized === true) return true;
  if (!token) return false;
  const m = /^(Bearer|Basic) (\S+)$/i.exec(req.headers.authorization ?? "");
  if (!m) return false;
  const given = Buffer.from(m[1]!.toLowerCase() === "bearer" ? m[2]! : Buffer.from(m[2]!, "base64").toString("utf8").replace(/^[^:]*:/, ""));
  return given.length === token.length && timingSafeEqual(given, token);
}

async function serve(init: HttpInit, req: IncomingMessage, res: ServerResponse, open: boolean, token: Buffer | undefined): Promise<void> {
  let url: URL;
  try {
    url = new URL(req.url ?? "/", "http://node");
  } catch {
    return sendError(res, 400, "BAD_REQUEST", "malformed request path");
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    return sendError(res, 405, "BAD_REQUEST", `${req.method} is not served here; use GET`);
  }
  const isMetrics = url.pathname === "/metrics";
  if (!open && !(isMetrics && init.metricsOpen) && !authorized(req, token)) {
    // With a token, browsers are asked for it (any user name, the token as password).
    if (token) res.setHeader("WWW-Authenticate", 'Basic realm="dfs", charset="UTF-8"');
    return sendError(res, 401, "FORBIDDEN", "a client certificate of the cluster CA or the bearer token is needed");
  }
  if (isMetrics) return send(res, 200, init.metrics.contentType, await init.metrics.text());
  if (init.api && url.pathname === "/") {
    res.setHeader("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:");
    return send(res, 200, "text/html; charset=utf-8", statusPage());
  }
  try {
    const answer = init.api?.(url.pathname, url.searchParams);
    if (!answer) return sendError(res, 404, "NOT_FOUND", `nothing at ${url.pathname}${init.api ? "" : " (the status page and API are served by directory processes)"}`);
    send(res, 200, "application/json", JSON.stringify(await answer));
  } catch (err) {
    const e = toDfsError(err);
    const status = e.code === "NOT_FOUND" ? 404 : e.code === "BAD_REQUEST" ? 400 : e.code === "UNAVAILABLE" ? 503 : 500;
    sendError(res, status, e.code, e.message);
  }
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  send(res, status, "application/json", JSON.stringify({ error: { code, message } }));
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff" });
  res.end(res.req.method === "HEAD" ? undefined : body);
}
