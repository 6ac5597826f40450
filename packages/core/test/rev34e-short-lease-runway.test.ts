import { describe, expect, it } from 'vitest';
import {
  type AcquireResult,
  createIdempotency,
  type IdempotencyStore,
  ManualClock,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

// FINDING (rev34e, low; fixed): edge34 made the lease estimate send + leaseMs - 1 ms (a store
// whose clock reads whole ms, rounded down, may end the lease that much early) but left the
// runway an acquisition must be answered within at leaseMs - min(leaseMs / 10, 1 s). For a
// lease under 10 ms that runway ends after the estimate: an acquisition answered between the
// two (leaseMs 5: between 4 and 4.5 ms after its send) was used, the operation started with
// the lease already past core's own estimate, and a second caller took the key over from the
// whole-ms store while the first held it with a live signal: two runs of one key.
describe('an acquisition answered past the lease estimate is never used (rev34e)', () => {
  it.each([0.9, 0.5])(
    "leaseMs 5, answered 4.25 ms after its send (the store's reading %s ms into a ms): refused, no second owner beside a live one",
    async (fraction) => {
      // One clock for core and the store, which reads it in whole ms, rounded down.
      const clock = new ManualClock(1_000 + fraction);
      const fake = new FakeStore({ now: () => Math.floor(clock.now()) });
      // Applied at the send, answered when the test says (a slow link back).
      let answer: (() => void) | undefined;
      const slowFirst: IdempotencyStore = {
        capabilities: fake.capabilities,
        acquire: (input) => {
          const result = fake.acquireSync(input);
          return new Promise<AcquireResult>((resolve) => {
            answer = () => resolve(result);
          });
        },
        complete: (i) => fake.complete(i),
        release: (i) => fake.release(i),
        extend: (i) => fake.extend(i),
        get: (k) => fake.get(k),
      };
      const options = { clock, leaseMs: 5, heartbeatMs: false as const };
      const idem = createIdempotency<string>({ ...options, store: slowFirst });
      const other = createIdempotency<string>({ ...options, store: fake });
      const first = idem.begin({ key: 'k', scope: 's' }).then(
        (begun) => begun,
        (error: unknown) => error as Error,
      );
      await Promise.resolve();
      clock.advance(4.25);
      answer?.();
      const held = await first;
      // The store's lease (from its reading, floor(send) + 5) has passed for fraction > 0.75.
      clock.advance(0.5);
      const taker = await other.begin({ key: 'k', scope: 's' }).then(
        (begun) => begun.kind,
        (error: unknown) => (error as Error).name,
      );
      if (held instanceof Error) {
        // Refused: the operation never starts; whatever the other caller does is alone.
        expect(held.name).toBe('LeaseLostError');
      } else if (held.kind === 'acquired') {
        // Used: the key must still be its own while its signal is live.
        expect(
          { signalLive: !held.execution.signal.aborted, taker },
          'the first owner holds the key with a live signal',
        ).not.toEqual({ signalLive: true, taker: 'acquired' });
        await held.execution.release().catch(() => {});
      }
      await idem.drain(1_000);
      await other.drain(1_000);
    },
  );
});
