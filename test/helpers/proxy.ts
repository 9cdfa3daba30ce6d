import https from "node:https";
import type { TestContext } from "node:test";
import { WebSocket, WebSocketServer, type RawData } from "ws";
import type { TlsMaterial } from "../../src/transport/tls.js";
import { decode, Kind } from "../../src/transport/codec.js";

/** Which way a message goes: from the node that dialled the proxy (`up`) or back to it (`down`). */
export type Direction = "up" | "down";

/**
 * A wss man in the middle for tests: a node dials it as if it were `upstream`, and it forwards every message
 * both ways, except those a test chooses to hold back (for example the directory's delete orders to one
 * storage node) until the test releases them. It presents `serverTls` to the node and `clientTls` upstream.
 */
export class HoldingProxy {
  private readonly held: { ws: WebSocket; data: Buffer }[] = [];
  private readonly seen: string[] = [];
  private holdIf: (dir: Direction, type: string) => boolean = () => false;

  private closing?: Promise<void>;

  private constructor(readonly url: string, private readonly stop: () => Promise<void>) {}

  static async start(t: TestContext, init: { upstream: string; serverTls: TlsMaterial; clientTls: TlsMaterial }): Promise<HoldingProxy> {
    const server = https.createServer({ ...init.serverTls, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.3" });
    const wss = new WebSocketServer({ server, maxPayload: 64 * 1024 * 1024 });
    const sockets = new Set<WebSocket>();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const proxy = new HoldingProxy(`wss://127.0.0.1:${port}`, async () => {
      for (const s of sockets) s.terminate();
      wss.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });
    wss.on("connection", (down: WebSocket) => {
      const up = new WebSocket(init.upstream, { ...init.clientTls, minVersion: "TLSv1.3", maxPayload: 64 * 1024 * 1024 });
      sockets.add(down).add(up);
      const early: Buffer[] = [];
      up.on("open", () => {
        for (const m of early.splice(0)) up.send(m, { binary: true });
      });
      down.on("message", (data: RawData) => {
        const buf = data as Buffer;
        if (proxy.keep("up", buf, up)) return;
        if (up.readyState === WebSocket.OPEN) up.send(buf, { binary: true });
        else early.push(buf);
      });
      up.on("message", (data: RawData) => {
        const buf = data as Buffer;
        if (!proxy.keep("down", buf, down)) down.send(buf, { binary: true });
      });
      const end = () => {
        down.terminate();
        up.terminate();
      };
      down.on("close", end);
      up.on("close", end);
      down.on("error", end);
      up.on("error", end);
    });
    t.after(() => proxy.close());
    return proxy;
  }

  /** Drops every connection and stops listening: the address then refuses connections. */
  close(): Promise<void> {
    this.closing ??= this.stop();
    return this.closing;
  }

  /** From now on, requests of a matching type are held back (replies always pass). */
  hold(pred: (dir: Direction, type: string) => boolean): void {
    this.holdIf = pred;
  }

  /** Types of the requests held so far, in order. */
  get heldTypes(): string[] {
    return [...this.seen];
  }

  /** Sends every held message on, in the order it came, and holds nothing more. */
  release(): void {
    this.holdIf = () => false;
    for (const { ws, data } of this.held.splice(0)) if (ws.readyState === WebSocket.OPEN) ws.send(data, { binary: true });
  }

  private keep(dir: Direction, data: Buffer, to: WebSocket): boolean {
    let type: string;
    try {
      const env = decode(data);
      if (env.kind !== Kind.Request && env.kind !== Kind.Tell) return false;
      type = env.type;
    } catch {
      return false;
    }
    if (!this.holdIf(dir, type)) return false;
    this.held.push({ ws: to, data });
    this.seen.push(type);
    return true;
  }
}
