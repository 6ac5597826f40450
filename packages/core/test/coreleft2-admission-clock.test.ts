import { describe, expect, it } from 'vitest';
import { createAdmission } from '../src/index.js';
import { gate } from './support/settle.js';

/** A clock that throws on the readings listed (1-based), and answers 0 otherwise. */
function clock(throwsOn: number[]) {
  let readings = 0;
  const error = new Error('clock broke');
  return {
    error,
    now: () => {
      readings++;
      if (throwsOn.includes(readings)) throw error;
      return 0;
    },
    get readings() {
      return readings;
    },
  };
}

/** An admission of one slot, on the clock `now`. */
function oneSlot(now: () => number, options: { maxQueue?: number; maxWaitMs?: number }) {
  return createAdmission({
    targetLatencyMs: 100,
    initialLimit: 1,
    minLimit: 1,
    maxLimit: 1,
    now,
    ...options,
  });
}

/** Settles a promise into what it gave, without throwing. */
function outcome<T>(promise: Promise<T>) {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

describe('createAdmission with an injected now that throws: the calls in flight stay exact', () => {
  it('when a call starts: the call rejects with the clock error (never a synchronous throw), the store is not called, no slot is held', async () => {
    const c = clock([1]);
    const admission = oneSlot(c.now, { maxQueue: 0 });
    let called = 0;
    let running: Promise<string> | undefined;
    expect(() => {
      running = admission.run('sheddable', async () => {
        called++;
        return 'x';
      });
    }).not.toThrow();
    expect(await outcome(running as Promise<string>)).toEqual({ error: c.error });
    expect(called).toBe(0);
    expect(admission.inFlight).toBe(0);
    // The one slot is free: the next call is admitted, not refused for ever.
    expect(await admission.run('sheddable', async () => 'next')).toBe('next');
    expect(admission.inFlight).toBe(0);
    expect(admission.refused).toBe(0);
  });

  it('the same for essential work', async () => {
    const c = clock([1]);
    const admission = createAdmission({ targetLatencyMs: 100, now: c.now });
    let result: Promise<string> | undefined;
    expect(() => {
      result = admission.run('essential', async () => 'x');
    }).not.toThrow();
    expect(await outcome(result as Promise<string>)).toEqual({ error: c.error });
    expect(admission.inFlight).toBe(0);
  });

  it('when a call settles with a value: the value is kept, the slot freed and a waiting call served', async () => {
    // Readings: 1 start of the first call, 2 its settling (throws), 3 start of the waiter, 4 its settling.
    const c = clock([2]);
    const admission = oneSlot(c.now, { maxWaitMs: 2_147_483_647 });
    const g = gate();
    const first = admission.run('sheddable', () => g.promise);
    let waiterCalled = false;
    const waiter = admission.run('sheddable', async () => {
      waiterCalled = true;
      return 'served';
    });
    expect(admission.waiting).toBe(1);
    g.open('ok');
    expect(await outcome(first)).toEqual({ value: 'ok' });
    expect(waiterCalled).toBe(true);
    expect(await waiter).toBe('served');
    expect(admission.inFlight).toBe(0);
    expect(admission.waiting).toBe(0);
    expect(admission.limit).toBe(1);
    expect(c.readings).toBe(4);
  });

  it('when a call settles with an error: its own error is kept, and the slot freed', async () => {
    const c = clock([2]);
    const admission = oneSlot(c.now, { maxQueue: 0 });
    const storeError = new Error('store said no');
    expect(
      await outcome(
        admission.run('sheddable', async () => {
          throw storeError;
        }),
      ),
    ).toEqual({ error: storeError });
    expect(admission.inFlight).toBe(0);
    // A call that throws synchronously, with the clock throwing when it settles.
    const c2 = clock([2]);
    const admission2 = oneSlot(c2.now, { maxQueue: 0 });
    expect(
      await outcome(
        admission2.run('sheddable', () => {
          throw storeError;
        }),
      ),
    ).toEqual({ error: storeError });
    expect(admission2.inFlight).toBe(0);
    expect(await admission2.run('sheddable', async () => 'next')).toBe('next');
  });

  it('when a waiting call is served and the clock throws at its start: it rejects, and the next waiter is still served', async () => {
    // Readings: 1 start of the first call, 2 its settling, 3 start of waiter A (throws), 4 start of waiter B, 5 its settling.
    const c = clock([3]);
    const admission = oneSlot(c.now, { maxWaitMs: 2_147_483_647 });
    const g = gate();
    const first = admission.run('sheddable', () => g.promise);
    let aCalled = false;
    const a = admission.run('sheddable', async () => {
      aCalled = true;
      return 'a';
    });
    const b = admission.run('sheddable', async () => 'b');
    expect(admission.waiting).toBe(2);
    g.open('ok');
    expect(await outcome(first)).toEqual({ value: 'ok' });
    expect(await outcome(a)).toEqual({ error: c.error });
    expect(aCalled).toBe(false);
    expect(await b).toBe('b');
    expect(admission.inFlight).toBe(0);
    expect(admission.waiting).toBe(0);
  });
});
