import { describe, expect, it } from 'vitest';
import {
  admitStore,
  createAdmission,
  createIdempotency,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { gate, rejection } from './support/settle.js';

/** An admission of one slot whose waiters wait a minute (longer than any test). */
const oneSlot = () =>
  createAdmission({
    targetLatencyMs: 1_000,
    initialLimit: 1,
    minLimit: 1,
    maxLimit: 1,
    maxWaitMs: 60_000,
  });

describe('admission: a queued call whose caller gave up (edge33)', () => {
  it('an acquire queued behind the limit whose storeTimeoutMs passed leaves the queue and is never sent', async () => {
    const admission = oneSlot();
    const inner = new FakeStore();
    const idem = createIdempotency<string>({
      store: admitStore(inner, admission),
      heartbeatMs: false,
      storeTimeoutMs: 50,
    });
    // The only slot is held by a raw call until the test frees it.
    const blocker = gate<undefined>();
    const blocking = admission.run('sheddable', () => blocker.promise);
    const failure = await rejection(idem.begin({ key: 'queued' }));
    expect(failure).toBeInstanceOf(StoreUnavailableError);
    // Given up at storeTimeoutMs: out of the queue at once, not held until maxWaitMs (a minute).
    expect(admission.waiting).toBe(0);
    blocker.open(undefined);
    await blocking;
    await new Promise((r) => setTimeout(r, 30));
    // Never sent: no late acquire landing after its caller had given up.
    expect(inner.calls.acquire).toBe(0);
    expect(inner.records.size).toBe(0);
    // Nothing to give back either: the acquire's own promise says it was never sent, so core
    // adds no release to a store that is already saturated.
    expect(inner.calls.release).toBe(0);
    await idem.drain(1_000);
  });

  it('run() with an already aborted signal that would wait rejects unsent without queuing; one that gets a slot at once runs', async () => {
    const admission = oneSlot();
    const aborted = AbortSignal.abort(new Error('gave up'));
    expect(await admission.run('sheddable', async () => 'ran', { signal: aborted })).toBe('ran');
    const blocker = gate<undefined>();
    const blocking = admission.run('sheddable', () => blocker.promise);
    let called = false;
    const pending = rejection(
      admission.run(
        'sheddable',
        async () => {
          called = true;
        },
        { signal: aborted },
      ),
    );
    // Not queued at all (it would have waited up to maxWaitMs, a minute).
    expect(admission.waiting).toBe(0);
    expect(await pending).toMatchObject({
      code: 'STORE_UNAVAILABLE',
      unsent: true,
      cause: aborted.reason,
    });
    blocker.open(undefined);
    await blocking;
    expect(called).toBe(false);
  });
});
