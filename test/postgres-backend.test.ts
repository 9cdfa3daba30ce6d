import assert from "node:assert/strict";
import net from "node:net";
import test, { type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { isOutcomeUnknown, now, openPostgres, type PostgresBackend, type PostgresOptions } from "../src/metadata/postgres.js";
import type { Tx } from "../src/metadata/tx.js";
import { DfsError } from "../src/protocol/errors.js";
import { waitFor } from "./helpers/cluster.js";
import { multiHostUrl, startPostgres, startStandby, type PgServer } from "./helpers/postgres.js";

function open(t: TestContext, url: string, opts: PostgresOptions = {}): PostgresBackend {
  const db = openPostgres(url, opts);
  t.after(() => db.close());
  return db;
}

/** Settles `p` and gives back its error; fails when it resolves. */
async function failure(p: Promise<unknown>): Promise<DfsError> {
  const err = await p.then(
    (v) => assert.fail(`expected a failure, got ${JSON.stringify(v)}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof DfsError, `expected a DfsError, got ${String(err)}`);
  return err;
}

/** `p`, or a failure naming `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  const ac = new AbortController();
  return Promise.race([
    p.finally(() => ac.abort()),
    sleep(ms, undefined, { signal: ac.signal }).then(() => assert.fail(`timed out after ${ms} ms waiting for ${what}`)),
  ]);
}

async function ids(server: PgServer, table: string): Promise<number[]> {
  return (await server.query(`SELECT id FROM ${table} ORDER BY id`)).map((r) => Number(r.id));
}

/** The pid of a backend whose COMMIT waits for the synchronous standby. */
async function waitingForStandby(server: PgServer): Promise<number> {
  return waitFor(async () => (await server.query("SELECT pid FROM pg_stat_activity WHERE wait_event = 'SyncRep'"))[0]?.pid as number | undefined, "a COMMIT waiting for the standby");
}

test("statements: ? placeholders, values as numbers, strings and bytes, the database clock, rollback on error", async (t) => {
  const pg = await startPostgres(t);
  const db = open(t, pg.url);
  await db.transact((tx) => tx.run("CREATE TABLE v (id bigint PRIMARY KEY, name text, ok boolean, at timestamptz, data bytea, doc jsonb)"));
  const at = Date.UTC(2024, 4, 1, 12, 0, 0, 123);
  const changed = await db.transact(async (tx) => {
    await tx.run("INSERT INTO v VALUES (?, ?, ?, ?, ?, ?)", [2 ** 40, "a ? b", 1, at, new Uint8Array([0, 1, 255]), '{"k": 1}']);
    return tx.run("UPDATE v SET name = name || '?' WHERE id = ? -- a comment?", [2 ** 40]);
  });
  assert.equal(changed, 1);
  const row = await db.transact((tx) => tx.get("SELECT id, name, ok, at, data, doc, '?' FROM v WHERE id = ?", [2 ** 40]));
  assert.deepEqual(row?.slice(0, 4), [2 ** 40, "a ? b?", 1, at]);
  assert.deepEqual([...(row?.[4] as Uint8Array)], [0, 1, 255]);
  assert.deepEqual(JSON.parse(row?.[5] as string), { k: 1 });
  assert.equal(row?.[6], "?");
  assert.equal(await db.transact((tx) => tx.get("SELECT id FROM v WHERE id = ?", [7])), undefined);

  const before = Date.now();
  const clock = await db.transact((tx) => now(tx));
  assert.ok(Math.abs(clock - before) < 5_000, `database clock ${clock} is far from ${before}`);

  // A failing statement rejects with PostgreSQL's own error, after rolling back the whole transaction.
  await assert.rejects(
    db.transact(async (tx) => {
      await tx.run("INSERT INTO v (id) VALUES (?)", [1]);
      await tx.run("INSERT INTO v (id) VALUES (?)", [2 ** 40]);
    }),
    { code: "23505" },
  );
  await assert.rejects(
    db.transact(async (tx) => {
      await tx.run("INSERT INTO v (id) VALUES (?)", [3]);
      throw new DfsError("NOT_FOUND", "the caller's own error");
    }),
    { code: "NOT_FOUND" },
  );
  assert.deepEqual(await ids(pg, "v"), [2 ** 40]);
  // An integer a number cannot hold exactly is an error, never a rounded value; the next transaction is not disturbed.
  await assert.rejects(db.transact((tx) => tx.all("SELECT 1::bigint UNION ALL SELECT 9007199254740993::bigint UNION ALL SELECT 3::bigint")), { code: "INTERNAL" });
  assert.deepEqual(await db.transact((tx) => tx.all("SELECT ?::bigint, 2", [2 ** 53 - 1])), [[2 ** 53 - 1, 2]]);
  assert.equal(db.stats().commits, 6);
});

test("conflicting transactions are retried until every increment counts once", async (t) => {
  const pg = await startPostgres(t, { settings: ["deadlock_timeout=100ms"] });
  const db = open(t, pg.url, { connections: 4 });
  await db.transact((tx) => tx.run("CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)"));
  await db.transact((tx) => tx.run("INSERT INTO counter VALUES (1, 0), (2, 0)"));
  const read = async (tx: Tx, id: number) => (await tx.get("SELECT n FROM counter WHERE id = ?", [id]))![0] as number;

  // Two transactions read the same row before either writes: serializability lets only one commit as it ran.
  let arrived = 0;
  let bothRead!: () => void;
  const barrier = new Promise<void>((resolve) => (bothRead = resolve));
  const readThenWrite = () => {
    let first = true;
    return db.transact(async (tx) => {
      const n = await read(tx, 1);
      if (first) {
        first = false;
        if (++arrived === 2) bothRead();
        await within(barrier, 10_000, "both transactions to read");
      }
      await tx.run("UPDATE counter SET n = ? WHERE id = 1", [n + 1]);
    });
  };
  await Promise.all([readThenWrite(), readThenWrite()]);
  assert.equal(await db.transact((tx) => read(tx, 1)), 2);
  const afterConflict = db.stats().serializationRetries;
  assert.ok(afterConflict >= 1, "the losing transaction was run again");

  // Two transactions lock two rows in opposite orders: a deadlock, which PostgreSQL breaks by aborting one.
  arrived = 0;
  let bothLocked!: () => void;
  const locked = new Promise<void>((resolve) => (bothLocked = resolve));
  const crosswise = (a: number, b: number) => {
    let first = true;
    return db.transact(async (tx) => {
      await tx.run("UPDATE counter SET n = n + 1 WHERE id = ?", [a]);
      if (first) {
        first = false;
        if (++arrived === 2) bothLocked();
        await within(locked, 10_000, "both transactions to lock a row");
      }
      await tx.run("UPDATE counter SET n = n + 1 WHERE id = ?", [b]);
    });
  };
  await Promise.all([crosswise(1, 2), crosswise(2, 1)]);
  assert.ok(db.stats().serializationRetries > afterConflict, "the deadlock's victim was run again");

  // Many read-modify-write increments from four workers at once.
  const worker = async () => {
    for (let i = 0; i < 25; i++) await db.transact(async (tx) => tx.run("UPDATE counter SET n = ? WHERE id = 1", [(await read(tx, 1)) + 1]));
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  assert.deepEqual((await pg.query("SELECT n FROM counter ORDER BY id")).map((r) => Number(r.n)), [2 + 2 + 100, 2]);
  t.diagnostic(`serialization retries: ${db.stats().serializationRetries}`);
});

test("acknowledged commits survive the primary's death; the back end finds the promoted standby by itself", async (t) => {
  const primary = await startPostgres(t);
  const standby = await startStandby(t, primary);
  // The standby comes first: a server in recovery must be passed over, as libpq does with read-write.
  const db = open(t, multiHostUrl(standby, primary), { timeoutMs: 3_000, connectTimeoutMs: 1_000 });
  await db.transact((tx) => tx.run("CREATE TABLE w (id int PRIMARY KEY)"));
  assert.equal(db.stats().server, `127.0.0.1:${primary.port}`);

  const acked: number[] = [];
  const failed: { id: number; err: DfsError }[] = [];
  let next = 0;
  let stop = false;
  const writer = async () => {
    while (!stop) {
      const id = ++next;
      try {
        await db.transact((tx) => tx.run("INSERT INTO w VALUES (?)", [id]));
        acked.push(id);
      } catch (err) {
        failed.push({ id, err: err as DfsError });
      }
    }
  };
  const writers = [writer(), writer()];
  await waitFor(() => acked.length >= 40, "40 acknowledged commits");
  await primary.kill("SIGKILL");
  stop = true;
  await within(Promise.all(writers), 10_000, "the writers to finish");
  assert.ok(failed.length >= 1, "a write under way when the primary died failed");
  for (const f of failed) assert.equal(f.err.code, "UNAVAILABLE", f.err.message);

  // No server takes writes now: a transaction fails within its deadline, and says why.
  const started = Date.now();
  const down = await failure(db.transact((tx) => tx.run("INSERT INTO w VALUES (?)", [-1]), { timeoutMs: 1_500 }));
  assert.equal(down.code, "UNAVAILABLE");
  assert.ok(!isOutcomeUnknown(down));
  assert.ok(Date.now() - started < 4_000, `failed after ${Date.now() - started} ms`);

  await standby.promote();
  await db.transact((tx) => tx.run("INSERT INTO w VALUES (?)", [0]));
  assert.equal(db.stats().server, `127.0.0.1:${standby.port}`);

  const present = new Set(await ids(standby, "w"));
  for (const id of acked) assert.ok(present.has(id), `acknowledged id ${id} is on the promoted standby`);
  // A failure that is not "outcome unknown" promises that nothing was committed.
  for (const f of failed) if (!isOutcomeUnknown(f.err)) assert.ok(!present.has(f.id), `id ${f.id} failed (${f.err.message}) yet was committed`);
  assert.ok(!present.has(-1));
  t.diagnostic(`acked ${acked.length}, failed ${failed.length} (${failed.filter((f) => isOutcomeUnknown(f.err)).length} unknown), stats ${JSON.stringify(db.stats())}`);
});

test("a COMMIT cut short while it waits for the synchronous standby is reported as of unknown outcome, never as done", async (t) => {
  const primary = await startPostgres(t);
  const standby = await startStandby(t, primary);
  const db = open(t, primary.url, { timeoutMs: 30_000 });
  await db.transact((tx) => tx.run("CREATE TABLE u (id int)"));
  // With the standby gone, every COMMIT waits for it after committing locally.
  await standby.stop();
  const insert = (id: number, timeoutMs?: number) => db.transact((tx) => tx.run("INSERT INTO u VALUES (?)", [id]), timeoutMs ? { timeoutMs } : {});
  const count = async (id: number) => Number((await primary.query("SELECT count(*) AS n FROM u WHERE id = $1", [id]))[0]!.n);

  // Cancelled (pg_cancel_backend): the server answers COMMIT with a warning that it "has already committed locally".
  const cancelled = failure(insert(1));
  await primary.query("SELECT pg_cancel_backend($1)", [await waitingForStandby(primary)]);
  const e1 = await within(cancelled, 10_000, "the cancelled COMMIT");
  assert.ok(isOutcomeUnknown(e1), e1.message);
  assert.equal(await count(1), 1, "committed locally, exactly once: the back end did not run it again");

  // Terminated (pg_terminate_backend): the warning, then the connection closes without an answer.
  const terminated = failure(insert(2));
  await primary.query("SELECT pg_terminate_backend($1)", [await waitingForStandby(primary)]);
  const e2 = await within(terminated, 10_000, "the terminated COMMIT");
  assert.ok(isOutcomeUnknown(e2), e2.message);
  assert.equal(await count(2), 1);

  // The deadline passes while COMMIT is unanswered.
  const started = Date.now();
  const e3 = await within(failure(insert(3, 1_000)), 10_000, "the COMMIT past its deadline");
  assert.ok(isOutcomeUnknown(e3), e3.message);
  assert.ok(Date.now() - started < 5_000);
  // Its server process still waits for the standby; once that wait is cancelled, the row shows it had committed.
  await primary.query("SELECT pg_cancel_backend($1)", [await waitingForStandby(primary)]);
  await waitFor(async () => (await count(3)) === 1, "row 3 to be visible");
  assert.equal(db.stats().unknownOutcomes, 3);
  assert.equal(db.stats().commits, 1);
});

test("with no server to reach, a transaction fails UNAVAILABLE within its deadline", async (t) => {
  const closedPort = async () => {
    const srv = net.createServer();
    await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
    const { port } = srv.address() as net.AddressInfo;
    await new Promise((resolve) => srv.close(resolve));
    return port;
  };
  const [p1, p2] = [await closedPort(), await closedPort()];
  for (const url of [`postgres://postgres@127.0.0.1:${p1}/postgres`, `postgres://postgres@127.0.0.1:${p1},127.0.0.1:${p2}/postgres?target_session_attrs=read-write`]) {
    const db = open(t, url, { timeoutMs: 1_000 });
    const started = Date.now();
    const err = await within(failure(db.transact((tx) => tx.run("SELECT 1"))), 10_000, `a transaction on ${url}`);
    assert.equal(err.code, "UNAVAILABLE");
    assert.match(err.message, /ECONNREFUSED/);
    assert.ok(Date.now() - started < 3_000, `failed after ${Date.now() - started} ms`);
    assert.ok(db.stats().connectionRetries >= 1, "it kept trying until the deadline");
    await db.close();
    assert.equal((await failure(db.transact((tx) => tx.run("SELECT 1")))).code, "UNAVAILABLE");
  }
  assert.throws(() => openPostgres("postgres://a@h/db?target_session_attrs=standby"), { code: "BAD_REQUEST" });
  assert.throws(() => openPostgres("mysql://a@h/db"), { code: "BAD_REQUEST" });
});
