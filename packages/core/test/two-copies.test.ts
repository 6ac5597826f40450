/**
 * Two copies of `@idem/core` in one process (the CommonJS build beside the ES module one, the
 * dual-package hazard, or two installed versions): each copy's errors are instances of the
 * other copy's classes of the same name, and each copy's `systemClock` is the system clock for
 * the other (the engine then counts durations on the monotonic clock).
 */
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as esm from '../src/index.js';

const require = createRequire(import.meta.url);
const cjs = require('@idem/core') as typeof esm;

afterEach(() => {
  vi.restoreAllMocks();
});

/** One error of each of core's classes, made by `copy`. */
function errorsOf(copy: typeof esm) {
  return {
    InvalidKeyError: new copy.InvalidKeyError('k'),
    InvalidInputError: new copy.InvalidInputError('i'),
    NotCanonicalError: new copy.NotCanonicalError('n', '/a'),
    InProgressError: new copy.InProgressError(1_000),
    MismatchError: new copy.MismatchError(),
    LeaseLostError: new copy.LeaseLostError('l'),
    StoreUnavailableError: new copy.StoreUnavailableError('u'),
    StoreFullError: new copy.StoreFullError('f'),
    OutcomeTooLargeError: new copy.OutcomeTooLargeError(10, 5),
    OutcomeCorruptError: new copy.OutcomeCorruptError('c'),
  } as const;
}

describe('errors of another copy of core', () => {
  it('the premise: the two copies have different classes', () => {
    expect(cjs.IdemError).not.toBe(esm.IdemError);
    // Copies are matched by class name: the build must keep the names as written.
    for (const copy of [cjs, esm]) {
      expect(copy.IdemError.name).toBe('IdemError');
      expect(copy.StoreFullError.name).toBe('StoreFullError');
      expect(new copy.IdemError('INVALID_INPUT', 'x').name).toBe('IdemError');
    }
    expect(Object.getPrototypeOf(new cjs.StoreFullError('x'))).not.toBe(
      esm.StoreFullError.prototype,
    );
  });

  for (const [from, to, label] of [
    [cjs, esm, 'CommonJS errors, ES module classes'],
    [esm, cjs, 'ES module errors, CommonJS classes'],
  ] as const) {
    it(`${label}: each is an instance of its own class and IdemError, of no other class`, () => {
      const made = errorsOf(from);
      const classes = to as unknown as Record<string, abstract new (...args: never[]) => unknown>;
      for (const [name, error] of Object.entries(made)) {
        expect(error instanceof to.IdemError, name).toBe(true);
        expect(to.isIdemError(error), name).toBe(true);
        expect(to.isIdemError(error, error.code), name).toBe(true);
        for (const other of Object.keys(made)) {
          const cls = classes[other];
          if (!cls) throw new Error(`no class ${other}`);
          expect(error instanceof cls, `${name} instanceof ${other}`).toBe(name === other);
        }
      }
    });
  }

  it('a subclass of another copy is an instance of its base class here, by name', () => {
    class RetryableStoreError extends cjs.StoreUnavailableError {}
    const error = new RetryableStoreError('down');
    expect(error instanceof esm.StoreUnavailableError).toBe(true);
    expect(error instanceof esm.IdemError).toBe(true);
    expect(error instanceof esm.StoreFullError).toBe(false);
  });

  it('look-alikes without the mark are not idem errors', () => {
    class StoreFullError extends Error {
      code = 'STORE_FULL';
    }
    const lookAlike = new StoreFullError('full');
    expect(lookAlike instanceof esm.StoreFullError).toBe(false);
    expect(lookAlike instanceof esm.IdemError).toBe(false);
    expect(esm.isIdemError(lookAlike)).toBe(false);
    for (const value of [
      null,
      undefined,
      0,
      'StoreFullError',
      Object.create(null),
      { name: 'StoreFullError', code: 'STORE_FULL' },
      () => {},
    ]) {
      expect(value instanceof esm.StoreFullError).toBe(false);
      expect(value instanceof esm.IdemError).toBe(false);
    }
  });

  it('a long prototype chain is walked a bounded number of steps', () => {
    let chain: object = Object.create(null);
    for (let i = 0; i < 1_000; i++) chain = Object.create(chain);
    expect(chain instanceof esm.StoreFullError).toBe(false);
    expect(chain instanceof esm.IdemError).toBe(false);
  });

  it('the engine here treats a full store built on the other copy as full (STORE_FULL, no give-back)', async () => {
    let releases = 0;
    const store: esm.IdempotencyStore = {
      capabilities: { clock: 'injectable' },
      acquire: async () => {
        throw new cjs.StoreFullError('full');
      },
      complete: async () => ({ ok: true }),
      release: async () => {
        releases++;
        return { ok: true };
      },
      extend: async () => ({ ok: true, leaseUntil: Date.now() + 1_000 }),
    } as unknown as esm.IdempotencyStore;
    const engine = esm.createIdempotency<string>({ store, heartbeatMs: false });
    const error = await engine
      .execute({ key: 'k', scope: null }, async () => 'ran')
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'STORE_FULL' });
    await engine.drain(1_000);
    expect(releases).toBe(0);
  });
});

describe('systemClock of another copy of core', () => {
  it('is the system clock here: durations on the monotonic clock', () => {
    expect(cjs.systemClock).not.toBe(esm.systemClock);
    const orig = Date.now.bind(Date);
    let offset = 0;
    vi.spyOn(Date, 'now').mockImplementation(() => orig() + offset);
    const mine = esm.elapsedClock(esm.systemClock);
    const theirs = esm.elapsedClock(cjs.systemClock);
    const before = theirs.now();
    offset = 10_000;
    // A wall-clock step forward: both elapsed clocks ignore it.
    expect(theirs.now() - before).toBeLessThan(1_000);
    expect(Math.abs(theirs.now() - mine.now())).toBeLessThan(50);
  });

  it('a clock that only looks like it is taken as given', () => {
    const custom = { now: () => 42 };
    expect(esm.elapsedClock(custom)).toBe(custom);
    const lookAlike = { now: () => Date.now(), [Symbol('@idem/core.systemClock')]: true };
    expect(esm.elapsedClock(lookAlike)).toBe(lookAlike);
  });
});

describe('ManualClock of another copy of core', () => {
  it("is a ManualClock here (and a subclass of either copy's); no other clock is", () => {
    expect(cjs.ManualClock).not.toBe(esm.ManualClock);
    class Stepped extends cjs.ManualClock {}
    for (const clock of [new esm.ManualClock(), new cjs.ManualClock(), new Stepped()]) {
      expect(esm.isManualClock(clock)).toBe(true);
      expect(cjs.isManualClock(clock)).toBe(true);
    }
    const manual = new esm.ManualClock();
    // The mark stays off the instance: equality and printing see only the time.
    expect(Object.getOwnPropertySymbols(manual)).toEqual([]);
    for (const clock of [
      esm.systemClock,
      cjs.systemClock,
      { now: () => manual.now() },
      { now: () => 42, [Symbol('@idem/core.manualClock')]: true },
    ]) {
      expect(esm.isManualClock(clock)).toBe(false);
    }
  });
});
