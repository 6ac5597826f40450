import { describe, expect, it } from 'vitest';
import { createIdempotency, type IdemEvent, ManualClock } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

// Adversarial review of the engine's events (issue 17, point 1).

describe('events under attack', () => {
  it('a lease lost at a heartbeat and found again by complete is one lease_lost, one execution_end', async () => {
    const clock = new ManualClock();
    const store = new FakeStore(clock);
    const events: IdemEvent[] = [];
    const idem = createIdempotency<unknown>({
      store,
      clock,
      leaseMs: 1_000,
      heartbeatMs: 10,
      onEvent: (e) => events.push(e),
    });
    const first = await idem.begin({ key: 'k' });
    if (first.kind !== 'acquired') throw new Error('expected an acquisition');
    clock.advance(1_001);
    const second = await idem.begin({ key: 'k' });
    if (second.kind !== 'acquired') throw new Error('expected a takeover');
    // The first execution's heartbeat finds the key taken over (signal aborts).
    await new Promise<void>((resolve) =>
      first.execution.signal.addEventListener('abort', () => resolve()),
    );
    await expect(
      first.execution.complete({ meta: {}, body: new Uint8Array() }),
    ).rejects.toMatchObject({
      code: 'LEASE_LOST',
    });
    await second.execution.complete({ meta: {}, body: new Uint8Array() });
    const ofFirst = events.filter((e) => 'fence' in e && e.fence === 1);
    expect(ofFirst.filter((e) => e.type === 'lease_lost')).toHaveLength(1);
    expect(ofFirst.filter((e) => e.type === 'execution_end')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'execution_end')).toHaveLength(2);
  });
});
