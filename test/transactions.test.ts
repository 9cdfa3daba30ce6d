import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import test from "node:test";
import { startCluster, tmpDir, waitFor } from "./helpers/cluster.js";
import { forEachBackend } from "./helpers/backends.js";

forEachBackend((metadata) => {
  test("writes between begin and commit become visible together; abort drops them", async (t) => {
    const c = await startCluster(t, { metadata, storage: 2 });
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "one"), "first");
    fs.writeFileSync(path.join(work, "two"), "second");
    const session = c.session(path.join(work, "cache"), { cwd: work });
    const say = (line: string) => session.child.stdin!.write(line + "\n");
    say("begin");
    say("write /t/one one");
    say("write /t/two two");
    await waitFor(() => (session.stdout.match(/staged/g) ?? []).length === 2, "two staged writes");
    assert.equal((await c.client(["ls", "/t"])).stdout, "", "nothing visible before commit");
    say("commit");
    await waitFor(() => /committed 2 file\(s\)/.test(session.stdout), "commit");
    const ls = (await c.client(["ls", "/t"])).stdout;
    assert.match(ls, /\/t\/one/);
    assert.match(ls, /\/t\/two/);
    assert.equal((await c.client(["cat", "/t/two"])).stdout, "second");

    say("begin");
    say("write /t/three one");
    say("abort");
    await waitFor(() => /aborted; 1 staged write\(s\) dropped/.test(session.stdout), "abort");
    // The lock taken inside the aborted transaction is free again.
    const w = await c.client(["write", "/t/three", "two"], { cwd: work });
    assert.equal(w.code, 0, w.stderr);
    assert.equal((await c.client(["cat", "/t/three"])).stdout, "second");
    session.child.stdin!.end("exit\n");
    assert.equal(await session.exited, 0);
  });

  test("a transaction with a failed write commits nothing", async (t) => {
    const c = await startCluster(t, { metadata, storage: 2 });
    const work = tmpDir(t);
    fs.writeFileSync(path.join(work, "one"), "first");
    const session = c.session(path.join(work, "cache"), { cwd: work });
    const say = (line: string) => session.child.stdin!.write(line + "\n");
    say("begin");
    say("write /u/one one");
    await waitFor(() => /staged/.test(session.stdout), "first write staged");
    await c.storage[1]!.kill("SIGKILL");
    fs.writeFileSync(path.join(work, "one2"), "other bytes");
    say("write /u/two one2");
    await waitFor(() => /error:/.test(session.stderr), "second write fails");
    say("commit");
    await waitFor(() => /nothing was committed/.test(session.stderr), "commit refused");
    assert.equal((await c.client(["ls", "/u"])).stdout, "");
  });
});
