import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { REPORT_PAGE, type RegisterReply } from "../../protocol/directory.js";
import { toDfsError } from "../../protocol/errors.js";
import type { Peer } from "../../transport/actor.js";
import type { Logger } from "../../log.js";
import { writeFileDurable } from "../durable-file.js";
import type { ChunkStore } from "./chunkstore.js";
import type { DeleteGuard } from "./gens.js";

export interface RegistrationInit {
  dataDir: string;
  url: string;
  zone: string;
  capacity?: number;
}

/** A small token kept in the data folder: made once (or learnt once), the same on every later start. */
async function readToken(file: string): Promise<string | null> {
  try {
    const v = (await fs.readFile(file, "utf8")).trim();
    return /^[0-9a-f]{32,128}$/.test(v) ? v : null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

/**
 * How a storage node joins the directory, on every (re)connect: it proves its node id with the secret kept in
 * its data folder, names the cluster its data belongs to (learnt at its first registration), then reports its
 * chunks page by page, and keeps sending heartbeats.
 */
export class Registration {
  private heartbeat?: NodeJS.Timeout;

  private constructor(
    private readonly c: { log: Logger; chunks: ChunkStore; guard: DeleteGuard },
    private readonly init: RegistrationInit,
    private readonly secret: string,
    private clusterId: string | null,
  ) {}

  static async open(c: { log: Logger; chunks: ChunkStore; guard: DeleteGuard }, init: RegistrationInit): Promise<Registration> {
    const secretFile = path.join(init.dataDir, "node-secret");
    let secret = await readToken(secretFile);
    if (!secret) {
      secret = randomBytes(32).toString("hex");
      await writeFileDurable(secretFile, secret + "\n");
    }
    return new Registration(c, init, secret, await readToken(path.join(init.dataDir, "cluster-id")));
  }

  private async figures() {
    const u = this.c.chunks.usage();
    return { free: await this.c.chunks.free(), used: u.used, chunks: u.chunks };
  }

  async register(peer: Peer): Promise<void> {
    const { chunks, guard, log } = this.c;
    const f = await this.figures();
    const reply = await peer.request<RegisterReply>("dir.register", {
      kind: "storage", id: chunks.nodeId, url: this.init.url, zone: this.init.zone, capacity: this.init.capacity ?? null,
      ...f, clusterId: this.clusterId, secret: this.secret,
    }, { timeoutMs: 60_000 });
    if (this.clusterId === null) {
      await writeFileDurable(path.join(this.init.dataDir, "cluster-id"), reply.clusterId + "\n");
      this.clusterId = reply.clusterId;
      log.info("joined cluster", { clusterId: reply.clusterId });
    }
    guard.setFloor(reply.gen);
    this.beat(peer, reply.heartbeatMs);
    let page: Buffer[] = [];
    let sent = 0;
    const send = async (last: boolean) => {
      await peer.request("dir.report", { report: reply.report, hashes: Buffer.concat(page), last }, { timeoutMs: 60_000 });
      sent += page.length;
      page = [];
    };
    for await (const h of chunks.hashes()) {
      page.push(Buffer.from(h, "hex"));
      if (page.length >= REPORT_PAGE) await send(false);
    }
    await send(true);
    log.info("registered with directory", { id: chunks.nodeId, chunks: sent });
  }

  private beat(peer: Peer, everyMs: number): void {
    clearInterval(this.heartbeat);
    this.heartbeat = setInterval(() => {
      void this.figures()
        .then((fig) => (peer.closed ? undefined : peer.tell("dir.heartbeat", fig)))
        .catch((err) => this.c.log.debug("heartbeat failed", { err: toDfsError(err).message }));
    }, everyMs);
    this.heartbeat.unref();
  }

  close(): void {
    clearInterval(this.heartbeat);
  }
}
