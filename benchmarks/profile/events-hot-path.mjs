// Micro-benchmark of the engine's hot path with and without an event listener, on the
// memory store: `execute` of fresh keys (miss + complete) and of a recorded key (hit).
// Run after `pnpm --filter @idem/core --filter @idem/store-memory build`:
//   nice -n 19 node benchmarks/profile/events-hot-path.mjs [iterations] [rounds] [other-core.js]
// With a third argument (another build of @idem/core, e.g. main's dist/index.js copied
// aside), both engines run in alternating rounds of the same process, so machine load hits
// both alike. Prints the median CPU ns per execute of each case.
import * as current from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

const iterations = Number(process.argv[2] ?? 20_000);
const rounds = Number(process.argv[3] ?? 7);
const engines = { this: current };
if (process.argv[4]) engines.other = await import(process.argv[4]);
let seen = 0;
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
  const started = process.cpuUsage();
  for (let i = 0; i < iterations; i++) {
    const key = kind === 'hit' ? 'hit-key' : `key-${i}`;
    await idem.execute({ key, scope, operation: 'POST /op' }, operation);
  }
  const { user, system } = process.cpuUsage(started);
  return ((user + system) * 1_000) / iterations;
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
  for (const [name, values] of Object.entries(samples))
    console.log(`${kind.padEnd(5)} ${name.padEnd(26)} ${median(values).toFixed(0)} CPU ns/execute`);
}
if (seen === 0) throw new Error('the listener saw no event');
