// Fills the memory store with 1 MB outcomes far past its byte budget and prints the
// process RSS: the figure behind the README's memory bound. Bounded in count, no timers.
// Run after `pnpm build`:
//   node scripts/memory-bound.mjs [answers=1500] [maxBytes=default] [retention=24h|turnover]
import { randomUUID } from 'node:crypto';
import { ManualClock, StoreFullError } from '@idem/core';
import { createMemoryStore } from '../dist/index.js';

const answers = Number(process.argv[2] ?? 1_500);
const maxBytes = process.argv[3] ? Number(process.argv[3]) : undefined;
const mode = process.argv[4] ?? '24h';
const MB = 1_000_000;
const MiB = 1024 * 1024;
const retentionMs = mode === 'turnover' ? 10_000 : 86_400_000;

const clock = new ManualClock();
const store = createMemoryStore({ clock, maxBytes, sweepIntervalMs: 0 });
const limit = maxBytes ?? 128 * MiB;
const rss = () => process.memoryUsage().rss;
const baseline = rss();
let peak = baseline;
let peakAccounted = 0;
let recorded = 0;
let markers = 0;
let refusedAcquires = 0;

for (let i = 0; i < answers; i++) {
  // In turnover mode one answer a second with 10 s retention: about ten stay live.
  if (mode === 'turnover') clock.advance(1_000);
  const key = `answer-${i}`;
  const owner = randomUUID();
  try {
    await store.acquire({ key, owner, fingerprint: 'fp', leaseMs: 30_000, retentionMs });
  } catch (error) {
    if (!(error instanceof StoreFullError)) throw error;
    refusedAcquires++;
    continue;
  }
  const outcome = new Uint8Array(MB).fill(i & 0xff); // a fresh buffer, as encodeOutcome makes
  try {
    await store.complete({ key, owner, outcome, retentionMs });
    recorded++;
  } catch (error) {
    if (!(error instanceof StoreFullError)) throw error;
    await store.complete({ key, owner, outcome: new Uint8Array(200), retentionMs });
    markers++;
  }
  if (store.bytes > limit) throw new Error(`accounted ${store.bytes} > maxBytes ${limit}`);
  peakAccounted = Math.max(peakAccounted, store.bytes);
  peak = Math.max(peak, rss());
}

const f = (bytes) => `${(bytes / MiB).toFixed(0)} MiB`;
console.log(
  JSON.stringify({
    node: process.version,
    mode,
    answers,
    maxBytes: f(limit),
    recorded,
    markers,
    refusedAcquires,
    peakAccounted: f(peakAccounted),
    baselineRss: f(baseline),
    peakRss: f(peak),
    peakRssAboveBaseline: f(peak - baseline),
    finalRss: f(rss()),
  }),
);
