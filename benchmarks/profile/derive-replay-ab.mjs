// A/B micro-benchmark of the Node path of derivation and replay: two builds of @idem/core and
// @idem/store-memory (this worktree's and another's, e.g. the commit before the runtime
// matrix) in alternating rounds of one process, so machine load hits both alike. CPU time.
//   nice -n 19 node benchmarks/profile/derive-replay-ab.mjs <other-worktree> [iterations] [rounds]
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const here = new URL('../../', import.meta.url).pathname;
const other = process.argv[2];
const iterations = Number(process.argv[3] ?? 20_000);
const rounds = Number(process.argv[4] ?? 9);
const load = async (root) => ({
  core: await import(pathToFileURL(join(root, 'packages/core/dist/index.js')).href),
  memory: await import(pathToFileURL(join(root, 'packages/store-memory/dist/index.js')).href),
});
const builds = { now: await load(here), ...(other ? { before: await load(other) } : {}) };

const body = { amount: 1999, currency: 'eur', customer: 'cus_123', note: 'x'.repeat(200) };
const scope = ['idem/http/v1', { principal: 'acct_1234567890' }, 'POST /charges'];
const outcome = { id: 'ch_1', status: 'succeeded', payload: 'y'.repeat(500) };

const cpuNs = (start) => {
  const { user, system } = process.cpuUsage(start);
  return (user + system) * 1_000;
};
const cases = {
  derive: async ({ core }) => {
    const start = process.cpuUsage();
    for (let i = 0; i < iterations; i++) {
      core.deriveStorageKey(scope, `key-${i}`);
      core.fingerprint({ method: 'POST', route: '/charges', body });
    }
    return cpuNs(start) / iterations;
  },
  'execute replay': async ({ core, memory }) => {
    const idem = core.createIdempotency({ store: createStore(memory) });
    const request = () => ({
      key: 'replayed-key',
      scope,
      fingerprint: core.fingerprint({ method: 'POST', route: '/charges', body }),
    });
    await idem.execute(request(), async () => outcome);
    const start = process.cpuUsage();
    for (let i = 0; i < iterations; i++) await idem.execute(request(), async () => outcome);
    return cpuNs(start) / iterations;
  },
  'execute fresh': async ({ core, memory }) => {
    const idem = core.createIdempotency({ store: createStore(memory) });
    const start = process.cpuUsage();
    for (let i = 0; i < iterations; i++) {
      await idem.execute(
        {
          key: `k-${i}`,
          scope,
          fingerprint: core.fingerprint({ method: 'POST', route: '/charges', body }),
        },
        async () => outcome,
      );
    }
    return cpuNs(start) / iterations;
  },
};
function createStore(memory) {
  return memory.createMemoryStore({ sweepIntervalMs: 0 });
}

const results = {};
for (let r = 0; r < rounds + 1; r++) {
  // Alternate which build goes first; round 0 warms both up and is not counted.
  const order = r % 2 ? Object.keys(builds).reverse() : Object.keys(builds);
  for (const [name, run] of Object.entries(cases))
    for (const build of order) {
      const ns = await run(builds[build]);
      if (r === 0) continue;
      results[name] ??= {};
      results[name][build] ??= [];
      results[name][build].push(ns);
    }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(`node ${process.version}, ${iterations} iterations x ${rounds} rounds, CPU ns per op`);
for (const [name, byBuild] of Object.entries(results)) {
  const line = Object.entries(byBuild)
    .map(
      ([build, xs]) =>
        `${build} median ${median(xs).toFixed(0)} [${xs.map((x) => x.toFixed(0)).join(' ')}]`,
    )
    .join(' | ');
  console.log(`${name}: ${line}`);
}
