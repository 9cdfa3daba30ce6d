import assert from "node:assert/strict";
import test from "node:test";
import { numberPlaceholders } from "../src/metadata/placeholders.js";
import { parsePgUrl, redact } from "../src/metadata/pg-url.js";

test("? placeholders become $1, $2... outside literals, quoted names and comments", () => {
  assert.equal(numberPlaceholders("SELECT a FROM t WHERE b = ? AND c > ?"), "SELECT a FROM t WHERE b = $1 AND c > $2");
  assert.equal(numberPlaceholders("SELECT '?', 'it''s ?', ? FROM \"odd?name\" WHERE x = ?"), "SELECT '?', 'it''s ?', $1 FROM \"odd?name\" WHERE x = $2");
  assert.equal(numberPlaceholders("SELECT E'\\' ?', ? -- why?\n, ? /* a /* nested? */ comment? */ , ?"), "SELECT E'\\' ?', $1 -- why?\n, $2 /* a /* nested? */ comment? */ , $3");
  assert.equal(numberPlaceholders("SELECT $$ ? $$, $tag$ ?$$ ? $tag$, ?"), "SELECT $$ ? $$, $tag$ ?$$ ? $tag$, $1");
  // A standard string ends at its quote even after a backslash; only E'' strings escape with it.
  assert.equal(numberPlaceholders("SELECT 'a\\', ?"), "SELECT 'a\\', $1");
  assert.equal(numberPlaceholders("SELECT 1"), "SELECT 1");
});

test("metadata URLs: one server or several, and what target_session_attrs allows", () => {
  const one = parsePgUrl("postgres://dfs:secret@db.example:6543/meta?sslmode=require");
  assert.deepEqual(one.hosts, [{ host: "db.example", port: 6543 }]);
  assert.equal(one.primaryOnly, false);
  assert.equal(one.url, "postgres://dfs:secret@db.example:6543/meta?sslmode=require");

  const many = parsePgUrl("postgresql://dfs@10.0.0.1,10.0.0.2:5433,[::1]:5434/meta?target_session_attrs=read-write&application_name=dfs");
  assert.deepEqual(many.hosts, [
    { host: "10.0.0.1", port: 5432 },
    { host: "10.0.0.2", port: 5433 },
    { host: "::1", port: 5434 },
  ]);
  assert.equal(many.primaryOnly, true);
  assert.equal(many.url, "postgresql://dfs@10.0.0.1:5432/meta?application_name=dfs");
  assert.equal(parsePgUrl("postgres://u@h/db?target_session_attrs=primary").primaryOnly, true);

  assert.throws(() => parsePgUrl("postgres://u@h/db?target_session_attrs=read-only"), { code: "BAD_REQUEST" });
  assert.throws(() => parsePgUrl("postgres://u@h:99999/db"), { code: "BAD_REQUEST" });
  assert.throws(() => parsePgUrl("sqlite"), { code: "BAD_REQUEST" });
  assert.equal(redact("postgres://dfs:secret@h/db"), "postgres://dfs:***@h/db");
});
