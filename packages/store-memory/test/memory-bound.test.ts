import { ManualClock, StoreFullError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

const MiB = 1024 * 1024;

/**
 * The memory bound (issue 11: 1,500 answers of 1 MB took RSS to 1.8 GiB). Accounted bytes are
 * asserted exactly; RSS only against a generous ceiling, because freed buffers wait for the
 * garbage collector and the allocator (`scripts/memory-bound.mjs` prints the real figures).
 */
describe('memory bound', () => {
  it.each(['24h', 'turnover'] as const)(
    '1,500 answers of 1 MB (%s retention) stay within maxBytes, and RSS with them',
    async (mode) => {
      const maxBytes = 64 * MiB;
      const clock = new ManualClock();
      const store = createMemoryStore({ clock, maxBytes, sweepIntervalMs: 0 });
      const retentionMs = mode === 'turnover' ? 10_000 : 86_400_000;
      const baseline = process.memoryUsage().rss;
      let peakRss = baseline;
      let recorded = 0;
      for (let i = 0; i < 1_500; i++) {
        if (mode === 'turnover') clock.advance(1_000);
        const input = { key: `a${i}`, owner: `o${i}`, fingerprint: 'fp', leaseMs: 30_000 };
        const acquired = await store.acquire({ ...input, retentionMs }).catch((e: unknown) => e);
        if (acquired instanceof StoreFullError) continue;
        const outcome = new Uint8Array(1_000_000).fill(i & 0xff);
        const write = { key: input.key, owner: input.owner, retentionMs };
        const done = await store.complete({ ...write, outcome }).catch((e: unknown) => e);
        if (done instanceof StoreFullError) {
          await store.complete({ ...write, outcome: new Uint8Array(200) });
        } else {
          recorded++;
        }
        expect(store.bytes).toBeLessThanOrEqual(maxBytes);
        peakRss = Math.max(peakRss, process.memoryUsage().rss);
      }
      expect(recorded).toBeGreaterThanOrEqual(mode === 'turnover' ? 1_500 : 60);
      // Measured about 85 to 165 MiB above the baseline; without the bound it was 1.4 GiB.
      expect(peakRss - baseline).toBeLessThan(maxBytes + 384 * MiB);
    },
    // What is judged is memory, not time: 1,500 copies of 1 MB take 15 s on a busy machine
    // and passed 30 s in a loaded five-lane CI run.
    120_000,
  );
});
