import { randomBytes } from "node:crypto";
import { ensureDirectorySchema } from "../../../metadata/directory-schema.js";
import { setTimeout as sleep } from "node:timers/promises";
import { sqlState } from "../../../metadata/pg-errors.js";
import { openPostgres, type PostgresBackend } from "../../../metadata/postgres.js";
import type { Tx } from "../../../metadata/tx.js";
import { DfsError } from "../../../protocol/errors.js";
import type { Logger } from "../../../log.js";
import type { PeerPool } from "../../upstream.js";
import type { DirectoryCore } from "../core.js";
import { Repairer, type RepairSource } from "../repair.js";
import { PgFiles } from "./files.js";
import { PgCollector } from "./gc.js";
import { PgLeases } from "./leases.js";
import { PgMembership } from "./membership.js";
import { PgNodes } from "./nodes.js";
import { Runner } from "./runner.js";
import { PgS3Keys } from "./s3keys.js";
import { marks } from "./sql.js";

/** Transactions that only read: one snapshot, no predicate locks (see TransactOptions.readOnly). */
const READ = { readOnly: true } as const;

export interface PgCoreInit {
  /** The PostgreSQL URL. */
  url: string;
  replicas: number;
  minReplicas: number;
  deadAfterMs: number;
  heartbeatMs: number;
  orphanGraceMs?: number;
}

/**
 * The PostgreSQL back end: this process keeps nothing but its links, so any number of directory processes serve
 * the same cluster, and one of them at a time (see Runner) does the background work.
 */
export async function openPgCore(components: { log: Logger; peers: PeerPool }, init: PgCoreInit): Promise<DirectoryCore> {
  const log = components.log;
  const db = openPostgres(init.url, { log: log.child("postgres"), connections: 8 });
  let clusterId: string;
  try {
    // Schema changes in a transaction of their own; CockroachDB limits what else such a transaction may do.
    await ensureSchema(db);
    clusterId = await db.transact((tx) => prepare(tx), { timeoutMs: 30_000 });
  } catch (err) {
    await db.close();
    throw err;
  }
  log.info("metadata in PostgreSQL", { url: db.url, clusterId });

  const nodes = new PgNodes(db, log, init);
  const leases = new PgLeases(db);
  const files = new PgFiles(db, nodes, leases, init);
  /**
   * A request to a storage node: over its link to this process, or a connection of this process's own to the
   * address it last registered with (read each time: a restarted node may listen elsewhere).
   */
  const ask = async <T>(node: string, type: string, body: unknown, timeoutMs: number): Promise<T> => {
    const peer = nodes.peerOf(node);
    if (peer) return peer.request<T>(type, body, { timeoutMs });
    const r = await db.transact((tx) => tx.get("SELECT url FROM nodes WHERE id=?", [node]), READ);
    if (!r) throw new DfsError("NOT_FOUND", `no node ${node}`);
    return components.peers.request<T>(String(r[0]), type, body, { timeoutMs });
  };
  let repairer: Repairer | undefined;
  const changed = () => repairer?.schedule();
  const members = new PgMembership({ log, db, nodes, leases, ask, changed }, clusterId, init);

  const graceMs = init.orphanGraceMs ?? 3_600_000;
  const gcEveryMs = Math.max(500, Math.min(60_000, graceMs / 2));
  let lastGc = 0;
  let states = "";
  const runner: Runner = new Runner(db, log.child("runner"), Math.max(3000, Math.min(15_000, init.deadAfterMs)), async (leading) => {
    if (!leading) return;
    // Commits add rows faster than one fold a tick may take them in: fold until few are left.
    for (let i = 0; i < 20; i++) if ((await db.transact((tx) => foldCounts(tx))) < FOLD) break;
    // Nodes that died or came back anywhere: the scan looks at their chunks.
    const now = (await db.transact((tx) => tx.all(`SELECT id, ${nodes.stateSql("n")} FROM nodes n WHERE role='storage' ORDER BY id`), READ)).join(";");
    if (now !== states) {
      states = now;
      repairer?.schedule();
    }
    if (Date.now() - lastGc >= gcEveryMs) {
      lastGc = Date.now();
      await collector.sweep();
    }
  });
  const collector = new PgCollector({ log: log.child("gc"), db, runner, ask }, { graceMs });
  const source: RepairSource = {
    leading: () => runner.leading(),
    replicaPage: (cursor, limit) => db.transact(async (tx) => {
      const up = (s: string) => `(SELECT COUNT(*) FROM replicas r JOIN nodes n ON n.id=r.node WHERE r.hash=c.hash AND ${nodes.stateSql("n")} ${s})`;
      const rows = await tx.all(`SELECT c.hash, c.size, ${up("='up'")}, ${up("<>'down'")} FROM chunks c WHERE c.hash > ? AND c.refs > 0 ORDER BY c.hash LIMIT ?`, [cursor, limit]);
      return rows.map(([hash, size, u, p]) => ({ hash: String(hash), size: Number(size), up: Number(u), present: Number(p) }));
    }, READ),
    upStorage: () => db.transact((tx) => nodes.upStorage(tx), READ),
    liveReplicas: (hash) => db.transact(async (tx) => (await nodes.liveReplicas(tx, [hash])).get(hash)!, READ),
    liveHolders: (hash) => db.transact((tx) => nodes.liveHolders(tx, hash), READ),
    takeGen: () => db.transact(async (tx) => Number((await tx.get("SELECT nextval('gens')"))![0])),
    copy: (node, body) => {
      const epoch = runner.epoch;
      if (epoch === undefined) return Promise.resolve({ copied: 0 });
      return ask<{ copied: number }>(node, "store.copy", { ...body, epoch }, 120_000);
    },
    drop: (replicas, why) => void collector.drop(replicas, why).catch((err) => log.warn("trim failed", { err })),
    scanned: (under, at) => void db.transact(async (tx) => {
      for (const [key, num] of [["under", under], ["scanned", at]] as const) {
        await tx.run("INSERT INTO meta(key, num) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET num=excluded.num", [key, num]);
      }
    }).catch(() => {}),
  };
  repairer = new Repairer({ log: log.child("repair"), source }, { replicas: init.replicas });
  void runner.tick();

  let closing: Promise<void> | undefined;
  return {
    clusterId,
    register: (b, peer) => members.register(b, peer),
    report: (b, peer) => members.report(b, peer),
    async heartbeat(b, peer) {
      if (!(await nodes.heartbeat(peer, b))) throw new DfsError("BAD_REQUEST", "heartbeat before registration");
    },
    detach: (peer) => nodes.detach(peer),
    status: () => db.transact(async (tx) => {
      const scan = new Map((await tx.all("SELECT key, num FROM meta WHERE key IN ('under', 'scanned')")).map(([k, n]) => [String(k), Number(n)]));
      return {
        nodes: await nodes.list(tx),
        ...(await files.totals(tx)),
        underReplicated: scan.get("under") ?? 0,
        scannedAt: scan.has("scanned") ? new Date(scan.get("scanned")!).toISOString() : null,
      };
    }, READ),
    activity: () => ({ repairCopies: repairer!.copies, gcDeleted: collector.deleted, journalBytes: null, snapshotBytes: null }),
    lockUrl: () => db.transact((tx) => nodes.lockUrl(tx), READ),
    place: (b) => files.place(b),
    stored: (b, peer) => files.stored(b, peer),
    commit: (b) => files.commit(b),
    lookup: (path) => files.lookup(path),
    list: (prefix, limit, opts) => files.list(prefix, limit, opts),
    remove: (b) => files.remove(b),
    move: (b) => files.move(b),
    badReplica: (b, peer) => members.badReplica(b, peer),
    lease: (b) => leases.lease(b),
    unlease: (b) => leases.unlease(b),
    s3keys: new PgS3Keys(db),
    files: () => db.transact(async (tx) => (await files.totals(tx)).files, READ),
    close() {
      closing ??= (async () => {
        nodes.close();
        repairer!.close();
        await runner.close();
        await db.close();
      })();
      return closing;
    },
  };
}

/** SQLSTATEs of a table, type, sequence or column that another process created meanwhile. */
const CREATED_MEANWHILE = new Set(["23505", "42P07", "42710", "42701"]);

/**
 * Makes the tables where they are missing. Directory processes starting together on an empty database race to
 * create them, and PostgreSQL fails the losers' CREATE ... IF NOT EXISTS with a duplicate; the next attempt
 * finds the winners' tables.
 */
async function ensureSchema(db: PostgresBackend): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transact((tx) => ensureDirectorySchema(tx), { timeoutMs: 30_000 });
    } catch (err) {
      if (attempt >= 5 || !CREATED_MEANWHILE.has(sqlState(err) ?? "")) throw err;
      await sleep(100 * attempt);
    }
  }
}

/**
 * Makes what a running directory needs beyond the tables: the cluster id, the counters, the runner's row, and
 * sequences that start past what a migrated database already handed out. Returns the cluster id.
 */
async function prepare(tx: Tx): Promise<string> {
  await tx.run("INSERT INTO meta(key, txt) VALUES('cluster', ?) ON CONFLICT(key) DO NOTHING", [randomBytes(16).toString("hex")]);
  for (const key of ["files", "bytes", "chunks"]) await tx.run("INSERT INTO meta(key, num) VALUES(?, 0) ON CONFLICT(key) DO NOTHING", [key]);
  await Runner.ensureRow(tx);
  const floors: [string, string][] = [
    ["lease_tokens", "SELECT COALESCE(MAX(num), 0) FROM meta WHERE key='token'"],
    ["gens", "SELECT COALESCE(MAX(num), 0) FROM meta WHERE key='gen'"],
    ["report_marks", "SELECT COALESCE(MAX(mark), 0) FROM replicas"],
  ];
  for (const [seq, floor] of floors) {
    const f = Number((await tx.get(floor))![0]);
    // Only a sequence that never handed out a value: once used, it is past every floor already.
    if (f > 0) await tx.get(`SELECT setval('${seq}', ?) FROM ${seq} WHERE NOT is_called`, [f]);
  }
  return String((await tx.get("SELECT txt FROM meta WHERE key='cluster'"))![0]);
}

const FOLD = 2000;

/** Adds counter changes commits left in `counts` to meta's counters; answers how many rows it took. */
async function foldCounts(tx: Tx): Promise<number> {
  const rows = await tx.all("SELECT id, files, bytes, chunks FROM counts LIMIT ?", [FOLD]);
  if (rows.length === 0) return 0;
  const sum = [0, 0, 0];
  for (const r of rows) for (let i = 0; i < 3; i++) sum[i]! += Number(r[i + 1]);
  await tx.run(`DELETE FROM counts WHERE id IN (${marks(rows.length)})`, rows.map((r) => r[0]!));
  for (const [i, key] of ["files", "bytes", "chunks"].entries()) await tx.run("UPDATE meta SET num = num + ? WHERE key=?", [sum[i]!, key]);
  return rows.length;
}
