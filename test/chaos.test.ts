import assert from "node:assert/strict";
import test from "node:test";
import { envOptions, randomSeed, runChaos } from "./chaos/run.js";

// The short form of `npm run test:chaos`: one seed, a bounded run. CHAOS_SEED=N replays a seed.
test("chaos: mixed clients while random nodes are killed -9 and restarted lose nothing, never hang, keep the lock rules", async (t) => {
  const { seed = randomSeed(), ...opts } = envOptions(30);
  console.log(`seed=${seed}`);
  const r = await runChaos(t, { seed, ...opts });
  for (const line of r.report) console.log(line);
  assert.ok(r.counts.acknowledged > 0, "some calls were acknowledged");
  assert.ok(r.kills.directory + r.kills.lock + r.kills.storage > 0, "the scheduler killed something");
  assert.equal(r.lost, 0, `acknowledged writes lost (seed=${seed})`);
  assert.equal(r.counts.hung, 0, `calls hung (seed=${seed})`);
  assert.equal(r.violations, 0, `violations (seed=${seed})`);
});
