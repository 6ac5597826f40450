import { describe, expect, it } from 'vitest';
import { createIdempotency, type IdempotencyOptions } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

// Every option out of range is refused with INVALID_INPUT when the engine is created: a bad
// value found at request time would be an unbounded wait, a hot loop of store calls, a
// failed request after the operation ran, or a plain TypeError.

const invalid = expect.objectContaining({ code: 'INVALID_INPUT' });
const create = (options: Record<string, unknown>) =>
  createIdempotency({ store: new FakeStore(), ...options } as IdempotencyOptions);

describe('createIdempotency refuses options out of range with INVALID_INPUT', () => {
  it.each<[string, Record<string, unknown>]>([
    ['wait.timeoutMs NaN (an unbounded wait)', { wait: { timeoutMs: Number.NaN } }],
    ['wait.timeoutMs Infinity', { wait: { timeoutMs: Number.POSITIVE_INFINITY } }],
    ['wait.timeoutMs negative', { wait: { timeoutMs: -1 } }],
    ['wait.timeoutMs missing', { wait: {} }],
    ['wait: true', { wait: true }],
    ['wait.pollMs 0 (a hot loop of acquires)', { wait: { timeoutMs: 1_000, pollMs: 0 } }],
    ['wait.pollMs negative', { wait: { timeoutMs: 1_000, pollMs: -5 } }],
    ['heartbeatMs true', { heartbeatMs: true }],
    ['heartbeatMs a string', { heartbeatMs: '100' }],
    ['isFinal not a function', { isFinal: 1 }],
    ['serializer without methods', { serializer: {} }],
    ['onEvent not a function', { onEvent: 'log' }],
    ['clock without now()', { clock: {} }],
    // A time taken from a header or another service, as text: `now + leaseMs` would concatenate.
    ['clock.now() a numeric string', { clock: { now: () => String(Date.now()) } }],
    ['clock.now() NaN', { clock: { now: () => Number.NaN } }],
    ['a store without methods', { store: {} }],
    ['a store without capabilities', { store: { ...new FakeStore(), capabilities: undefined } }],
  ])('%s', (_name, options) => {
    expect(() => create(options)).toThrow(invalid);
  });

  it('accepts the valid forms', () => {
    expect(create({ wait: false }).settings.wait).toBe(false);
    expect(create({ wait: { timeoutMs: 500 } }).settings.wait).toEqual({ timeoutMs: 500 });
    expect(create({ wait: { timeoutMs: 500, pollMs: 20 } }).settings.wait).toEqual({
      timeoutMs: 500,
      pollMs: 20,
    });
    expect(create({ heartbeatMs: false }).settings.heartbeatMs).toBe(false);
    expect(create({ heartbeatMs: 1_000 }).settings.heartbeatMs).toBe(1_000);
  });

  it('drain() refuses a wait that is not a finite, non-negative number of ms', async () => {
    const idem = create({});
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, -1, '10']) {
      await expect(idem.drain(bad as number)).rejects.toEqual(invalid);
    }
    expect(await idem.drain(0)).toBe(0);
  });
});

describe('a listener that fails never breaks a request, nor the process', () => {
  it('an onEvent that throws or rejects is ignored (no unhandled rejection)', async () => {
    const seen: unknown[] = [];
    const listener = (reason: unknown) => seen.push(reason);
    process.on('unhandledRejection', listener);
    try {
      for (const onEvent of [
        () => {
          throw new Error('sync listener bug');
        },
        async () => {
          throw new Error('async listener bug');
        },
      ]) {
        const idem = create({ onEvent });
        expect(await idem.execute({ key: 'k' }, async () => 'ok')).toEqual({
          value: 'ok',
          replayed: false,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    } finally {
      process.off('unhandledRejection', listener);
    }
    expect(seen).toEqual([]);
  });
});
