/**
 * The engine's cost of a store that answers through a promise: `execute()` cycles on the
 * memory store as it is (its synchronous forms, which the engine calls directly) or behind
 * plain `async` methods (the engine's promise path, as for every networked store), 64 in
 * flight after a warm-up, printing ops/s and CPU µs a cycle.
 *
 *   node profile/async-store.mjs sync 300000
 *   node profile/async-store.mjs async 300000
 */
import { createIdempotency } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';

const [mode = 'sync', calls = '300000'] = process.argv.slice(2);
const N = Number(calls),
  C = 64;
const result = (key) => ({ key, data: 'x'.repeat(Math.max(0, 512 - 22 - key.length)) });
const mem = createMemoryStore({ maxEntries: 2 * N + 10000, maxBytes: (2 * N + 10000) * 4096 });
const store =
  mode === 'sync'
    ? mem
    : {
        capabilities: mem.capabilities,
        acquire: (i) => mem.acquire(i),
        complete: (i) => mem.complete(i),
        release: (i) => mem.release(i),
        extend: (i) => mem.extend(i),
        get: (k) => mem.get(k),
      };
const idem = createIdempotency({ store });
let i = 0;
const run = async (n) => {
  const end = i + n;
  await Promise.all(
    Array.from({ length: C }, async () => {
      while (i < end) {
        const k = `k${i++}`;
        await idem.execute({ key: k }, async () => result(k));
      }
    }),
  );
};
await run(20000);
const c0 = process.cpuUsage();
const t0 = performance.now();
await run(N);
const c = process.cpuUsage(c0);
const t = performance.now() - t0;
console.log(
  mode,
  Math.round((N / t) * 1000),
  'ops/s',
  ((c.user + c.system) / N).toFixed(2),
  'µs/op',
);
