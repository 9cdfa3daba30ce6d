/**
 * A transport server in a process of its own, for tests that freeze it (SIGSTOP) or block its event
 * loop: `node --import tsx test/helpers/peer.ts CERTS HEARTBEAT_MS MAX_PING_OUT`.
 * It prints `listening on URL` and serves t.echo (the body back), t.block (busy-waits body.ms on the
 * event loop, then answers) and t.never (never answers).
 */
import { loadCerts } from "../../src/certs/index.js";
import { logger } from "../../src/log.js";
import { Actor, Router, type Handler } from "../../src/transport/actor.js";
import { listen } from "../../src/transport/server.js";

const [certs, intervalMs, maxPingOut] = process.argv.slice(2);
if (!certs || !intervalMs || !maxPingOut) {
  process.stderr.write("usage: peer.ts CERTS HEARTBEAT_MS MAX_PING_OUT\n");
  process.exit(2);
}
const any = (b: unknown) => b;
const handlers: Record<string, Handler> = {
  "t.echo": { allow: ["client", "storage"], parse: any, handle: (b) => b },
  "t.block": {
    allow: ["client", "storage"],
    parse: any,
    handle: (b: { ms: number }) => {
      const until = Date.now() + b.ms;
      while (Date.now() < until) {
        // Holds the event loop on purpose, as a long synchronous scan would.
      }
      return "done";
    },
  },
  "t.never": { allow: ["client", "storage"], parse: any, handle: () => new Promise(() => {}) },
};
const router = new Router();
router.add(new Actor({ name: "t", prefix: "t.", concurrency: 4, handlers }));
const server = await listen({
  host: "127.0.0.1",
  port: 0,
  tls: loadCerts(certs, "storage"),
  router,
  log: logger("peer"),
  heartbeat: { intervalMs: Number(intervalMs), maxPingOut: Number(maxPingOut) },
});
process.stdout.write(`listening on ${server.url}\n`);
