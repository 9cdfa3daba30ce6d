import assert from "node:assert/strict";
import test from "node:test";
import { envOptions, randomSeed, runChaos } from "./run.js";

// `npm run test:chaos`: CHAOS_SEEDS runs (default 20) of CHAOS_DURATION seconds (default 60), seeds counting up
// from CHAOS_SEED_BASE (default: random); CHAOS_SEED=N runs that one seed only. A line per seed, then the list.
const { seed: only, ...opts } = envOptions(60);
const base = Number(process.env.CHAOS_SEED_BASE ?? randomSeed());
const seeds = only !== undefined ? [only] : Array.from({ length: Number(process.env.CHAOS_SEEDS ?? 20) }, (_, i) => base + i);
const lines: string[] = [];

test(`chaos over ${seeds.length} seed(s)`, async (t) => {
  console.log(`seeds=${seeds.join(",")}`);
  for (const seed of seeds) {
    await t.test(`seed=${seed}`, async (st) => {
      console.log(`seed=${seed}`);
      const r = await runChaos(st, { seed, ...opts });
      for (const line of r.report) console.log(line);
      lines.push(r.report[0]!);
      assert.ok(r.counts.acknowledged > 0, "some calls were acknowledged");
      assert.equal(r.lost + r.counts.hung + r.violations, 0, `seed=${seed}: lost=${r.lost} hung=${r.counts.hung} violations=${r.violations}`);
    });
  }
  console.log(["summary:", ...lines].join("\n"));
});
