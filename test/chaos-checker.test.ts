import assert from "node:assert/strict";
import test from "node:test";
import { check, type FinalRead } from "./chaos/checker.js";
import { contentBytes, sha256 } from "./chaos/content.js";
import type { DriverCall, DriverReply } from "./chaos/driver.js";
import { Ledger, type OpFields } from "./chaos/ledger.js";
import { ABSENT } from "./chaos/model.js";

/** A hand-made history: each call runs over the seconds given, so the order is exactly the one meant. */
class Story {
  readonly ledger = new Ledger();
  private readonly finals: FinalRead[] = [];

  content(id: string) {
    return this.ledger.content({ id, size: 100 });
  }

  call(client: string, req: DriverCall, from: number, to: number, reply: Partial<DriverReply> & { ok: boolean }, fields: OpFields = {}) {
    const op = this.ledger.begin(client, req, fields);
    this.ledger.end(op, { id: 0, result: {}, ...reply } as DriverReply);
    op.start = from * 1000;
    op.end = to * 1000;
    return op;
  }

  write(client: string, path: string, id: string, from: number, to: number, reply: Partial<DriverReply> & { ok: boolean } = { ok: true }, fields: OpFields = {}) {
    return this.call(client, { op: "write", path, content: this.content(id) }, from, to, reply, fields);
  }

  read(client: string, path: string, id: string | undefined, from: number, to: number, fields: OpFields = {}, lease?: { token: number; lost: boolean }) {
    const reply = id === undefined
      ? { ok: false, code: "NOT_FOUND", message: "no such file", lease }
      : { ok: true, result: { sha256: sha256(contentBytes(this.content(id))) }, lease };
    return this.call(client, { op: "read", path }, from, to, reply as DriverReply, fields);
  }

  final(path: string, value: string | undefined) {
    this.finals.push({ path, value, start: 1000_000, end: 1000_001, ...(value === undefined ? { error: "UNAVAILABLE no replica" } : {}) });
  }

  kinds(): string[] {
    return check(this.ledger, this.finals).map((f) => f.kind).sort();
  }
}

const ok = { ok: true } as const;
const indet = { ok: false, code: "UNAVAILABLE", message: "directory unreachable" } as const;

test("checker: a clean history with an indeterminate write passes, whichever way the write went", () => {
  for (const last of ["a1", "a2"]) {
    const s = new Story();
    s.write("c0", "/a", "a1", 0, 1);
    s.read("c1", "/a", "a1", 2, 3);
    s.write("c0", "/a", "a2", 4, 5, indet);
    s.read("c1", "/a", last, 6, 7);
    s.final("/a", last);
    assert.deepEqual(s.kinds(), []);
  }
});

test("checker: an acknowledged write that is gone, unreadable or replaced by an older version is lost", () => {
  for (const found of ["a1", ABSENT, undefined]) {
    const s = new Story();
    s.write("c0", "/a", "a1", 0, 1);
    s.write("c0", "/a", "a2", 2, 3);
    s.final("/a", found);
    assert.deepEqual(s.kinds(), ["lost"], `final value ${found}`);
  }
});

test("checker: a removed file that comes back, a stale read and unknown bytes are violations", () => {
  const s = new Story();
  s.write("c0", "/a", "a1", 0, 1);
  s.call("c0", { op: "rm", path: "/a" }, 2, 3, ok);
  s.final("/a", "a1");
  s.write("c0", "/b", "b1", 0, 1);
  s.write("c1", "/b", "b2", 2, 3);
  s.read("c2", "/b", "b1", 4, 5);
  s.final("/b", "b2");
  s.write("c0", "/c", "c1", 0, 1);
  s.final("/c", "unknown:00ff");
  assert.deepEqual(s.kinds(), ["corrupt", "reappeared", "stale-read"]);
});

test("checker: a write that failed with a definite error must not show", () => {
  const s = new Story();
  s.write("c0", "/a", "a1", 0, 1);
  s.write("c0", "/a", "a2", 2, 3, { ok: false, code: "STALE_TOKEN", message: "lock lost" });
  s.final("/a", "a2");
  assert.deepEqual(s.kinds(), ["lost"], "the acknowledged a1 is replaced by a write that said it failed");
});

test("checker: a transaction seen in part is reported", () => {
  const s = new Story();
  s.write("c0", "/a", "a0", 0, 1);
  s.write("c0", "/b", "b0", 0, 1);
  s.call("c0", { op: "begin" }, 2, 2, ok, { txn: 1 });
  s.write("c0", "/a", "a1", 3, 4, { ok: true, result: { staged: true } }, { txn: 1 });
  s.write("c0", "/b", "b1", 4, 5, { ok: true, result: { staged: true } }, { txn: 1 });
  s.call("c0", { op: "commit" }, 6, 7, indet, { txn: 1 });
  s.final("/a", "a1");
  s.final("/b", "b0");
  assert.deepEqual(s.kinds(), ["partial-transaction"]);
});

test("checker: a token granted twice, a change under a superseded token and an unlocked rm under a lease are found", () => {
  const s = new Story();
  const lease = (token: number) => ({ token, lost: false });
  s.call("c0", { op: "lock", path: "/s", waitMs: 0 }, 0, 1, { ok: true, result: { token: 5 }, lease: lease(5) }, { section: 1 });
  s.write("c0", "/s", "s1", 1, 2, { ok: true, lease: lease(5) }, { section: 1 });
  s.call("c1", { op: "rm", path: "/s" }, 3, 4, ok);
  s.read("c0", "/s", undefined, 5, 6, { section: 1 }, lease(5));
  s.call("c2", { op: "lock", path: "/s", waitMs: 0 }, 6, 7, { ok: true, result: { token: 5 }, lease: lease(5) }, { section: 2 });
  s.call("c3", { op: "lock", path: "/s", waitMs: 0 }, 7, 8, { ok: true, result: { token: 9 }, lease: lease(9) }, { section: 3 });
  s.write("c0", "/s", "s2", 9, 10, { ok: true, lease: lease(5) }, { section: 1 });
  s.final("/s", "s2");
  // A holder that reads back something else with nobody else's change in sight.
  s.write("c1", "/t", "t0", 0, 1);
  s.call("c1", { op: "lock", path: "/t", waitMs: 0 }, 2, 3, { ok: true, result: { token: 11 }, lease: lease(11) }, { section: 4 });
  s.write("c1", "/t", "t1", 3, 4, { ok: true, lease: lease(11) }, { section: 4 });
  s.read("c1", "/t", "t0", 5, 6, { section: 4 }, lease(11));
  s.final("/t", "t1");
  // The rm explains the holder's failed read-back, which is not counted a second time.
  assert.deepEqual(s.kinds(), ["double-grant", "lock-read-back", "stale-read", "superseded-token", "unlocked-change"]);
});
