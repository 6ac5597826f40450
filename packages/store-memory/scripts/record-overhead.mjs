// Measures what one record really costs in memory, to check the per-record estimate that
// the byte budget charges (RECORD_OVERHEAD_BYTES). Run after `pnpm build`:
//   node --expose-gc scripts/record-overhead.mjs
import { randomBytes, randomUUID } from 'node:crypto';
import { createMemoryStore } from '../dist/index.js';

const N = 100_000;
const digest = () => randomBytes(32).toString('base64url'); // a storage key or fingerprint
const retentionMs = 86_400_000;

function usage() {
  globalThis.gc();
  globalThis.gc();
  const { heapUsed, external } = process.memoryUsage();
  return heapUsed + external;
}

async function measure(label, fill, maxEntries = N) {
  const store = createMemoryStore({ maxEntries, maxBytes: 2 ** 40, sweepIntervalMs: 0 });
  const fingerprint = digest();
  const before = usage();
  // The storage key is created per request and kept by the store alone: it counts.
  for (let i = 0; i < N; i++) await fill(store, digest(), fingerprint);
  const after = usage();
  const real = (after - before) / N;
  const accounted = store.bytes / N;
  console.log(
    `${label.padEnd(28)} real ${real.toFixed(0).padStart(6)} B/record   accounted ${accounted.toFixed(0).padStart(6)} B/record`,
  );
  return store;
}

const acquire = (store, key, fingerprint) =>
  store.acquire({ key, owner: randomUUID(), fingerprint, leaseMs: 30_000, retentionMs });

const cases = {
  'in progress': acquire,
  released: async (store, key, fingerprint) => {
    const owner = randomUUID();
    await store.acquire({ key, owner, fingerprint, leaseMs: 30_000, retentionMs });
    await store.release({ key, owner, retentionMs });
  },
};
for (const size of [0, 64, 200, 1024, 4096]) {
  cases[`completed, ${size} B outcome`] = async (store, key, fingerprint) => {
    const owner = randomUUID();
    await store.acquire({ key, owner, fingerprint, leaseMs: 30_000, retentionMs });
    await store.complete({ key, owner, outcome: new Uint8Array(size), retentionMs });
  };
}

// A store of one entry: every released record is evicted by the next, leaving its remnant
// (its key and origin until its retention ends; REMNANT_OVERHEAD_BYTES). Per record: one
// remnant each but the last, which is the tombstone.
const evicted = cases.released;
const entries = { evicted: 1 };
cases.evicted = evicted;

// One case a process, so that one case's garbage never lands in another's figures.
const only = process.argv[2];
if (only !== undefined) {
  const keep = await measure(only, cases[only], entries[only]);
  if (keep.size !== (entries[only] ?? N)) throw new Error('lost records');
} else {
  const { execFileSync } = await import('node:child_process');
  for (const name of Object.keys(cases)) {
    const args = ['--expose-gc', new URL(import.meta.url).pathname, name];
    process.stdout.write(execFileSync(process.execPath, args));
  }
}
