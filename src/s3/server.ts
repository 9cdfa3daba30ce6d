import { randomBytes } from "node:crypto";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import { pipeline, type Readable } from "node:stream";
import type { Logger } from "../log.js";
import type { DfsClient } from "../roles/client.js";
import type { TlsMaterial } from "../transport/tls.js";
import { mayUse, type Ctx, type KeyScope, type Reply } from "./context.js";
import { S3Error, s3ErrorOf } from "./errors.js";
import { route } from "./routes.js";
import { bodyVerifier, verifySigV4, type SignedRequest } from "./sigv4.js";
import { errorDocument } from "./xml.js";

/** Access keys as the gateway needs them: a secret to check signatures, and the buckets the key may use. */
export interface KeySource {
  get(id: string): Promise<(KeyScope & { secret: string }) | undefined>;
}

export interface S3ServerInit {
  host: string;
  port: number;
  /** HTTPS with this certificate; without it, plain HTTP (loopback only: the caller checks). */
  tls?: TlsMaterial;
  client: DfsClient;
  keys: KeySource;
  log: Logger;
}

export interface S3Server {
  readonly url: string;
  close(): Promise<void>;
}

function decodePart(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new S3Error("InvalidURI", "Couldn't parse the specified URI.", 400);
  }
}

/** Path-style addressing: /BUCKET/KEY. */
function parseTarget(rawPath: string): { bucket?: string; key?: string } {
  const rest = rawPath.slice(1);
  if (rest === "") return {};
  const slash = rest.indexOf("/");
  if (slash < 0) return { bucket: decodePart(rest) };
  const key = rest.slice(slash + 1);
  return { bucket: decodePart(rest.slice(0, slash)), key: key === "" ? undefined : decodePart(key) };
}

export async function startS3Server(init: S3ServerInit): Promise<S3Server> {
  const handle = (req: IncomingMessage, res: ServerResponse) => void serve(init, req, res);
  const server = init.tls ? https.createServer({ cert: init.tls.cert, key: init.tls.key }, handle) : http.createServer(handle);
  // A 5 GiB upload takes minutes: no limit on a whole request, only on its headers and on idle sockets.
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(init.port, init.host, resolve);
  });
  const port = (server.address() as { port: number }).port;
  const url = `${init.tls ? "https" : "http"}://${init.host.includes(":") ? `[${init.host}]` : init.host}:${port}`;
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

async function serve(init: S3ServerInit, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const requestId = randomBytes(8).toString("hex").toUpperCase();
  res.setHeader("x-amz-request-id", requestId);
  res.setHeader("Server", "dfs");
  const raw = req.url ?? "/";
  const q = raw.indexOf("?");
  const rawPath = q < 0 ? raw : raw.slice(0, q);
  const rawQuery = q < 0 ? "" : raw.slice(q + 1);
  let resource = rawPath;
  try {
    const target = parseTarget(rawPath);
    resource = target.key !== undefined ? `/${target.bucket}/${target.key}` : target.bucket !== undefined ? `/${target.bucket}` : "/";
    // Distinct values: a repeated header is signed as its values joined, which the verifier does.
    const signed: SignedRequest = { method: req.method ?? "GET", rawPath, rawQuery, headers: req.headersDistinct };
    const keys = new Map<string, KeyScope & { secret: string }>();
    const verified = await verifySigV4(signed, async (id) => {
      const k = await init.keys.get(id);
      if (k) keys.set(id, k);
      return k?.secret;
    });
    const scope = keys.get(verified.accessKeyId)!;
    if (target.bucket !== undefined && !mayUse(scope, target.bucket)) {
      throw new S3Error("AccessDenied", `Access Denied: this key may not use bucket ${target.bucket}`, 403);
    }
    let body: Readable | undefined;
    const ctx: Ctx = {
      // The query as signed ("+" may have been signed as a space or as itself).
      req, res, requestId, ...target, query: new URLSearchParams(verified.query), scope: { id: scope.id, buckets: scope.buckets }, client: init.client,
      // A pipeline, so that a client that goes away mid-body fails the reader instead of leaving it waiting.
      body: () => (body ??= pipeline(req, bodyVerifier(verified, signed), () => undefined)),
    };
    const reply = await route(signed.method, target.bucket, target.key, ctx.query, req.headers)(ctx);
    await send(res, reply);
  } catch (err) {
    if (res.destroyed || (req.destroyed && !req.complete)) {
      init.log.debug("s3 client went away", { method: req.method, resource, requestId });
      return; // nobody is left to answer; what it sent is not committed
    }
    const e = s3ErrorOf(err);
    if (e.status >= 500) init.log.warn("s3 request failed", { method: req.method, resource, requestId, err });
    if (res.headersSent) {
      res.destroy(); // the body was under way: a cut connection is the only honest end
      return;
    }
    const doc = errorDocument(e, resource, requestId);
    res.writeHead(e.status, { "Content-Type": "application/xml", "Content-Length": Buffer.byteLength(doc), ...(req.readableEnded ? {} : { Connection: "close" }) });
    res.end(req.method === "HEAD" ? undefined : doc);
  }
}

async function send(res: ServerResponse, reply: Reply): Promise<void> {
  const headers: Record<string, string | number> = { ...reply.headers };
  if (reply.xml !== undefined) {
    headers["Content-Type"] = "application/xml";
    headers["Content-Length"] = Buffer.byteLength(reply.xml);
  } else if (!reply.stream && headers["Content-Length"] === undefined) {
    headers["Content-Length"] = 0;
  }
  res.writeHead(reply.status ?? 200, headers);
  if (reply.stream && res.req.method !== "HEAD") {
    await reply.stream(res);
    res.end();
    return;
  }
  res.end(res.req.method === "HEAD" ? undefined : reply.xml);
}
