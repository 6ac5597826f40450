// Micro-benchmark of the engine's hot path with and without an event listener, on the
// memory store: `execute` of fresh keys (miss + complete) and of a recorded key (hit).
// Run after `pnpm --filter @idem/core --filter @idem/store-memory build`:
//   nice -n 19 node benchmarks/profile/events-hot-path.mjs [iterations] [rounds] [other-core.js]
// With a third argument (another build of @idem/core, e.g. main's dist/index.js copied
// aside), both engines run in alternating rounds of the same process, so machine load hits
// both alike. Prints the median CPU ns per execute of each case, and the young-generation
// collections per 10k executes (a measure of allocation).
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import * as current from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

const iterations = Number(process.argv[2] ?? 20_000);
const rounds = Number(process.argv[3] ?? 7);
const engines = { this: current };
if (process.argv[4]) engines.other = await import(process.argv[4]);
let seen = 0;
// Young-generation collections (scavenges) count allocation independently of machine load:
// each one follows a fixed amount of allocation.
let scavenges = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries())
    if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) scavenges++;
}).observe({ entryTypes: ['gc'] });
const listeners = {
  'no listener': undefined,
  'noop listener': () => {
    seen++;
  },
};

async function round(core, onEvent, kind) {
  const idem = core.createIdempotency({
    store: createMemoryStore(),
    ...(onEvent ? { onEvent } : {}),
  });
  const operation = async () => ({ ok: true });
  const scope = ['t', 'op'];
  if (kind === 'hit') await idem.execute({ key: 'hit-key', scope }, operation);
  // CPU time of this process, not wall time: other processes on a shared machine inflate
  // the wall clock of whichever round they happen to overlap.
  await sleep(50); // lets the observer take the collections so far
  const scavengesBefore = scavenges;
  const started = process.cpuUsage();
  for (let i = 0; i < iterations; i++) {
    const key = kind === 'hit' ? 'hit-key' : `key-${i}`;
    await idem.execute({ key, scope, operation: 'POST /op' }, operation);
  }
  const { user, system } = process.cpuUsage(started);
  await sleep(50); // lets the observer take the collections so far
  return {
    ns: ((user + system) * 1_000) / iterations,
    scavenges: ((scavenges - scavengesBefore) * 10_000) / iterations,
  };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
for (const kind of ['miss', 'hit']) {
  const samples = {};
  for (let r = 0; r < rounds; r++)
    for (const [engine, core] of Object.entries(engines))
      for (const [name, onEvent] of Object.entries(listeners)) {
        const label = `${engine} core, ${name}`;
        samples[label] = [...(samples[label] ?? []), await round(core, onEvent, kind)];
      }
  for (const [name, values] of Object.entries(samples)) {
    const ns = median(values.map((v) => v.ns)).toFixed(0);
    const gcs = median(values.map((v) => v.scavenges)).toFixed(1);
    console.log(`${kind.padEnd(5)} ${name.padEnd(26)} ${ns} CPU ns/execute, ${gcs} scavenges/10k`);
  }
}
if (seen === 0) throw new Error('the listener saw no event');
