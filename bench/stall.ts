/**
 * How long a node's event loop stalls, measured from outside: WebSocket pings, one at a time every 10 ms,
 * are answered by the node's event loop directly (no mailbox), so a late pong is a loop that was busy.
 */
import { WebSocket } from "ws";
import { loadCerts } from "../src/certs/index.js";

export interface StallFigures {
  /** Longest pong delay per phase, in ms. */
  maxMs: Record<string, number>;
  samples: number;
}

export class StallProbe {
  private phase = "start";
  private readonly maxMs: Record<string, number> = {};
  private samples = 0;
  private stopped = false;
  private timer?: NodeJS.Timeout;

  private constructor(private readonly ws: WebSocket) {}

  static async start(url: string, certs: string): Promise<StallProbe> {
    const ws = new WebSocket(url, { ...loadCerts(certs, "client"), minVersion: "TLSv1.3" });
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    const probe = new StallProbe(ws);
    probe.next();
    return probe;
  }

  /** Later samples count toward `name`. */
  mark(name: string): void {
    this.phase = name;
  }

  private next(): void {
    if (this.stopped) return;
    const sent = performance.now();
    const phase = this.phase;
    this.ws.once("pong", () => {
      const ms = performance.now() - sent;
      this.samples++;
      this.maxMs[phase] = Math.max(this.maxMs[phase] ?? 0, ms);
      this.timer = setTimeout(() => this.next(), 10);
    });
    this.ws.ping();
  }

  stop(): StallFigures {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ws.terminate();
    return { maxMs: { ...this.maxMs }, samples: this.samples };
  }
}
