import { describe, expect, it, vi } from 'vitest';
import { createIdempotency, InProgressError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

// FINDING (rev33e, low; fixed in edge34): a store that reads its clock in whole ms, rounded
// down (Redis's TIME and PostgreSQL's clock_timestamp() to whole ms, `readClock`), writes
// leaseUntil = floor(reading) + leaseMs: the lease ends up to 1 ms before reading + leaseMs.
// The keeper took send + leaseMs for a safe lower bound of the store's lease, so in that last
// sub-ms another owner could take the key over while the holder's signal was still live
// (without a renewal: heartbeatMs false, or renewals failing). The estimate now allows 1 ms.
describe('the lease estimate allows for a store whose clock reads whole ms, rounded down (edge34)', () => {
  it.each([0.9, 0.5, 0.1])(
    "while the holder's signal is live no other owner can take the key over (heartbeatMs false, the store's reading %s ms into a ms at the send)",
    async (fraction) => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance', 'Date'] });
      try {
        // The store's clock counts the same elapsed time as core's, read rounded down.
        const p0 = performance.now();
        const store = new FakeStore({
          now: () => Math.floor(1_000 + fraction + (performance.now() - p0)),
        });
        const idem = createIdempotency<string>({ store, leaseMs: 100, heartbeatMs: false });
        const held = await idem.begin({ key: 'k', scope: 's' });
        if (held.kind !== 'acquired') throw new Error(`expected acquired, got ${held.kind}`);
        const { signal } = held.execution;
        const other = createIdempotency<string>({ store, leaseMs: 100, heartbeatMs: false });
        // Steps of a quarter ms through the lease's last ms (the store's ends at 100 - fraction).
        let checked = 0;
        for (let elapsed = 98; elapsed <= 101; elapsed += 0.25) {
          await vi.advanceTimersByTimeAsync(elapsed - (performance.now() - p0));
          if (signal.aborted) break;
          const taker = await other.begin({ key: 'k', scope: 's' }).then(
            (begun) => begun.kind,
            (error: unknown) => (error instanceof InProgressError ? 'in_progress' : error),
          );
          expect(taker, `at ${elapsed} ms, the holder's signal live`).toBe('in_progress');
          checked++;
        }
        expect(checked).toBeGreaterThan(0);
        expect(signal.aborted).toBe(true);
        await held.execution.release().catch(() => {});
        await idem.drain(1_000);
        await other.drain(1_000);
      } finally {
        vi.useRealTimers();
      }
    },
  );
});
