// Time of an acquire in a store full of released tombstones, where every new key evicts the
// oldest one: it must not grow with the store. Run after `pnpm build`:
//   node scripts/eviction-time.mjs [records...]
// Before the release queue became a heap (it was a Map read from the front), an acquire cost
// 40 to 90 µs on average at 65,536 to 131,073 records, and its worst case 150 to 230 ms.
import { ManualClock } from '@idem/core';
import { createMemoryStore } from '../dist/index.js';

const sizes =
  process.argv.length > 2 ? process.argv.slice(2).map(Number) : [1_000, 65_537, 131_073];
const ROUNDS = 60_000;
const retentionMs = 86_400_000;

for (const n of sizes) {
  const store = createMemoryStore({
    clock: new ManualClock(),
    maxEntries: n,
    maxBytes: 2 ** 40,
    sweepIntervalMs: 0,
  });
  const flood = async (key) => {
    await store.acquire({ key, owner: 'o', fingerprint: 'f', leaseMs: 30_000, retentionMs });
    await store.release({ key, owner: 'o', retentionMs });
  };
  for (let i = 0; i < n; i++) await flood(`fill-${i}`);
  let worst = 0;
  const started = performance.now();
  for (let i = 0; i < ROUNDS; i++) {
    const t = performance.now();
    await flood(`new-${i}`);
    worst = Math.max(worst, performance.now() - t);
  }
  const average = ((performance.now() - started) * 1000) / ROUNDS;
  console.log(
    `${String(n).padStart(8)} tombstones: ${average.toFixed(1)} µs per acquire + release, worst ${worst.toFixed(1)} ms`,
  );
}
