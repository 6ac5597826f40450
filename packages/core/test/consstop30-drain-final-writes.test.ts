/**
 * consstop30: `drain(timeoutMs, { finalWritesOnly: true })` waits for the final writes the
 * engine retries in the background (an outcome lost there lets the operation run again), not
 * for its give-backs (the release of a key whose acquire failed: its operation never ran). A
 * give-back waits for the acquire's answer up to a lease and `storeTimeoutMs` from its send,
 * then sends the release again until a lease has passed: a shutdown during a store outage that
 * waited for it took its whole grace period with no outcome at stake (the consumers' stop()).
 * Cut short, it leaves its key to its lease: a retry waits, it never runs twice.
 */
import { describe, expect, it } from 'vitest';
import { createIdempotency, InvalidInputError, StoreUnavailableError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { rejection } from './support/settle.js';

function setup(options: { completionWaitMs?: number } = {}) {
  const store = new FakeStore();
  const idem = createIdempotency<string>({
    store,
    leaseMs: 20_000,
    heartbeatMs: false,
    storeTimeoutMs: 100,
    ...options,
  });
  let runs = 0;
  const op = async () => `ran-${++runs}`;
  return { store, idem, op, runs: () => runs };
}

describe('drain({ finalWritesOnly: true })', () => {
  it('does not wait for the give-back of an acquire that timed out; a plain drain does', async () => {
    const { store, idem, op, runs } = setup();
    // Never answered: the engine's time limit fails it, and its give-back waits for its answer.
    store.next.acquire.push('hang');
    expect(await rejection(idem.execute({ key: 'k' }, op))).toBeInstanceOf(StoreUnavailableError);
    expect(await idem.drain(20)).toBe(1);
    let finalOnly: number | undefined;
    void idem.drain(60_000, { finalWritesOnly: true }).then((left) => {
      finalOnly = left;
    });
    // The give-back is still pending after this drain (not cut short, only not waited for),
    // and the drain of final writes has resolved meanwhile. Before: the option was not read,
    // and that drain waited for the give-back (20 s and more).
    expect(await idem.drain(20)).toBe(1);
    expect(finalOnly).toBe(0);
    expect(runs()).toBe(0);
  });

  it('waits for a final write retried in the background, and counts it', async () => {
    const { store, idem, op, runs } = setup({ completionWaitMs: 150 });
    store.always.complete = 'throw';
    expect(await rejection(idem.execute({ key: 'w' }, op))).toBeInstanceOf(StoreUnavailableError);
    expect(await idem.drain(10, { finalWritesOnly: true })).toBe(1);
    delete store.always.complete;
    expect(await idem.drain(10_000, { finalWritesOnly: true })).toBe(0);
    expect(await idem.execute({ key: 'w' }, op)).toEqual({ value: 'ran-1', replayed: true });
    expect(runs()).toBe(1);
  });

  it('with a give-back and a final write pending, waits for the write only', async () => {
    const { store, idem, op } = setup({ completionWaitMs: 150 });
    store.next.acquire.push('hang');
    expect(await rejection(idem.execute({ key: 'g' }, op))).toBeInstanceOf(StoreUnavailableError);
    store.always.complete = 'throw';
    expect(await rejection(idem.execute({ key: 'w' }, op))).toBeInstanceOf(StoreUnavailableError);
    expect(await idem.drain(10)).toBe(2);
    expect(await idem.drain(10, { finalWritesOnly: true })).toBe(1);
    const drained = idem.drain(60_000, { finalWritesOnly: true });
    delete store.always.complete;
    expect(await drained).toBe(0);
    expect(await idem.drain(10)).toBe(1);
  });

  it('refuses options that are not an object with a boolean finalWritesOnly', async () => {
    const { idem } = setup();
    for (const options of [null, 'final', { finalWritesOnly: 'yes' }, { finalWritesOnly: 1 }])
      expect(await rejection(idem.drain(10, options as never))).toBeInstanceOf(InvalidInputError);
    expect(await idem.drain(10, {})).toBe(0);
    expect(await idem.drain(10, { finalWritesOnly: false })).toBe(0);
    expect(await idem.drain(undefined, undefined)).toBe(0);
  });
});
