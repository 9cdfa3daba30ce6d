import assert from "node:assert/strict";
import path from "node:path";
import test from "node:test";
import { loadCerts } from "../src/certs/index.js";
import { logger } from "../src/log.js";
import { DfsClient } from "../src/roles/client.js";
import { forEachBackend } from "./helpers/backends.js";
import { startCluster, tmpDir } from "./helpers/cluster.js";

forEachBackend((metadata) => {
  test("listing pages through a prefix in byte order, past names beyond the basic plane", async (t) => {
    const c = await startCluster(t, { storage: 2, metadata });
    const client = new DfsClient({ directoryUrls: [c.dirUrl], tls: loadCerts(c.certs, "client"), cacheDir: path.join(tmpDir(t), "cache"), log: logger("client") });
    t.after(() => client.close());
    await client.connect();
    // Byte order of UTF-8: "z" < "é" < "\uffff"-range < emoji; "/b" sorts before "/b/" children's neighbours.
    const names = ["/b/a", "/b/z", "/b/é", "/b/\u{1F600}", "/b/\u{1F600}/x", "/ba", "/c"];
    for (const n of names) await client.write(n, [Buffer.from(n)]);
    const under = names.filter((n) => n.startsWith("/b/"));
    assert.deepEqual((await client.ls("/b/")).map((e) => e.path), under, "the whole prefix, emoji names included");
    const seen: string[] = [];
    let after: string | undefined;
    for (;;) {
      const page = await client.ls("/b/", { after, limit: 2 });
      if (page.length === 0) break;
      assert.ok(page.length <= 2);
      seen.push(...page.map((e) => e.path));
      after = page.at(-1)!.path;
    }
    assert.deepEqual(seen, under, "pages of two, each from the first past the last");
    assert.deepEqual((await client.ls("/b/", { after: "/b/\u{1F600}/x" })).map((e) => e.path), []);
  });
});
