/**
 * coreleft: the option checks that threw a plain `RangeError` (`createAdmission`,
 * `ManualClock`) throw a typed `InvalidInputError` (code `INVALID_INPUT`, `isIdemError`) that
 * is still a `RangeError`: `catch (e) { if (e instanceof RangeError) }` keeps working. Another
 * copy of core (the CommonJS build) takes it for its `InvalidInputError` too.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import * as esm from '../src/index.js';
import {
  admitStore,
  createAdmission,
  createIdempotency,
  generateKey,
  IdemError,
  InvalidInputError,
  InvalidKeyError,
  invalidTypeInput,
  isIdemError,
  ManualClock,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { thrown } from './support/settle.js';

const require = createRequire(import.meta.url);
const cjs = require('@idem/core') as typeof esm;

/** A typed INVALID_INPUT error that is a RangeError as well, named as one. */
function expectTypedRange(error: unknown, label: string) {
  expect(error instanceof RangeError, label).toBe(true);
  expect(error instanceof Error, label).toBe(true);
  expect(error instanceof InvalidInputError, label).toBe(true);
  expect(error instanceof IdemError, label).toBe(true);
  expect(isIdemError(error, 'INVALID_INPUT'), label).toBe(true);
  expect(isIdemError(error), label).toBe(true);
  // Another copy of core (the CommonJS build) agrees.
  expect(error instanceof cjs.InvalidInputError, label).toBe(true);
  expect(cjs.isIdemError(error, 'INVALID_INPUT'), label).toBe(true);
  // And no other class.
  expect(error instanceof StoreUnavailableError, label).toBe(false);
  expect(error instanceof InvalidKeyError, label).toBe(false);
  expect(error instanceof cjs.StoreUnavailableError, label).toBe(false);
  expect(error instanceof TypeError, label).toBe(false);
  expect(error, label).toMatchObject({ code: 'INVALID_INPUT', name: 'RangeError' });
  expect(String(error), label).toMatch(/^RangeError: /);
  expect(Object.keys(error as object), label).toEqual(['code']);
}

/** An object whose conversion to a string or number throws. */
const hostile = {
  toString() {
    throw new Error('toString');
  },
  valueOf() {
    throw new Error('valueOf');
  },
};

describe('createAdmission: bad options', () => {
  const bad: [string, Parameters<typeof createAdmission>[0]][] = [
    ['target 0', { targetLatencyMs: 0 }],
    ['target NaN', { targetLatencyMs: Number.NaN }],
    ['target missing', {} as never],
    ['target past twice the timer limit', { targetLatencyMs: 2 ** 33 }],
    ['minLimit 0', { targetLatencyMs: 10, minLimit: 0 }],
    ['maxLimit 2.5', { targetLatencyMs: 10, maxLimit: 2.5 }],
    ['maxLimit below minLimit', { targetLatencyMs: 10, minLimit: 5, maxLimit: 4 }],
    ['initialLimit NaN', { targetLatencyMs: 10, initialLimit: Number.NaN }],
    ['maxQueue -1', { targetLatencyMs: 10, maxQueue: -1 }],
    ['maxWaitMs NaN', { targetLatencyMs: 10, maxWaitMs: Number.NaN }],
    ['maxWaitMs past a timer', { targetLatencyMs: 10, maxWaitMs: 2 ** 31 }],
    // Not numbers: a string was taken by coercion, a BigInt or a Symbol threw a TypeError
    // (comparing or formatting it), an object whose toString throws threw its own error.
    ['target a string', { targetLatencyMs: '100' as never }],
    ['target a BigInt', { targetLatencyMs: 100n as never }],
    ['target a Symbol', { targetLatencyMs: Symbol('t') as never }],
    ['maxWaitMs a string', { targetLatencyMs: 10, maxWaitMs: '5' as never }],
    ['initialLimit a Symbol', { targetLatencyMs: 10, initialLimit: Symbol('i') as never }],
    ['maxQueue a hostile object', { targetLatencyMs: 10, maxQueue: hostile as never }],
  ];
  for (const [label, options] of bad) {
    it(`${label}: INVALID_INPUT, still a RangeError`, () => {
      expectTypedRange(
        thrown(() => createAdmission(options)),
        label,
      );
    });
  }

  it('no options object, or a now that is no function: InvalidInputError at creation', () => {
    for (const options of [undefined, null, 5]) {
      const error = thrown(() => createAdmission(options as never));
      expect(isIdemError(error, 'INVALID_INPUT'), String(options)).toBe(true);
    }
    const error = thrown(() => createAdmission({ targetLatencyMs: 10, now: 5 as never }));
    expect(isIdemError(error, 'INVALID_INPUT')).toBe(true);
    expect((error as Error).message).toMatch(/now/);
  });

  it('good options still make an admission', () => {
    expect(createAdmission({ targetLatencyMs: 10, maxWaitMs: 2 ** 31 - 1 }).limit).toBe(16);
    expect(createAdmission({ targetLatencyMs: 10, now: () => 0 }).inFlight).toBe(0);
  });
});

describe('other public entry points refuse what is not an options object with INVALID_INPUT', () => {
  // Each threw a bare TypeError (`Cannot read properties of undefined`); admitStore with no
  // admission failed only at each store call, as an outage (503) for ever.
  const store = new FakeStore();
  const admission = createAdmission({ targetLatencyMs: 10 });
  const calls: [string, () => unknown][] = [
    ['createIdempotency(undefined)', () => createIdempotency(undefined as never)],
    ['createIdempotency(null)', () => createIdempotency(null as never)],
    ['generateKey(null)', () => generateKey(null as never)],
    ['generateKey({ version: 7, now: 5 })', () => generateKey({ version: 7, now: 5 as never })],
    ['admitStore(undefined, admission)', () => admitStore(undefined as never, admission)],
    ['admitStore(store, {})', () => admitStore(store, {} as never)],
    ['admitStore(store, undefined)', () => admitStore(store, undefined as never)],
  ];
  for (const [label, call] of calls) {
    it(label, () => {
      const error = thrown(call);
      expect(isIdemError(error, 'INVALID_INPUT'), String(error)).toBe(true);
    });
  }

  it('good ones still work', () => {
    expect(generateKey()).toMatch(/^[0-9a-f-]{36}$/);
    expect(generateKey({ version: 7, now: () => 0 })).toMatch(/^00000000-0000-7/);
    expect(typeof admitStore(store, admission).acquire).toBe('function');
  });
});

describe('the built copy (CommonJS) makes the same error', () => {
  it("its invalidRangeInput is this copy's InvalidInputError and a RangeError: the bundler kept the names", () => {
    const made = cjs.invalidRangeInput('from the build');
    expect(made instanceof RangeError).toBe(true);
    expect(made instanceof InvalidInputError).toBe(true);
    expect(made instanceof IdemError).toBe(true);
    expect(made instanceof StoreUnavailableError).toBe(false);
    expect(isIdemError(made, 'INVALID_INPUT')).toBe(true);
    expect(made.name).toBe('RangeError');
    expect(thrown(() => new cjs.ManualClock(0).advance(-1))).toBeInstanceOf(InvalidInputError);
  });
});

describe('corerev: invalidTypeInput, the same for a refusal that was a TypeError', () => {
  it('INVALID_INPUT, still a TypeError named as one, recognised by the other copy both ways; its cause kept', () => {
    const cause = new Error('the refusal reported');
    for (const [label, made] of [
      ['source', invalidTypeInput('bad option', { cause })],
      ['built (CommonJS)', cjs.invalidTypeInput('bad option', { cause })],
    ] as const) {
      for (const copy of [esm, cjs] as const) {
        expect(made instanceof copy.InvalidInputError, label).toBe(true);
        expect(made instanceof copy.IdemError, label).toBe(true);
        expect(copy.isIdemError(made, 'INVALID_INPUT'), label).toBe(true);
        expect(made instanceof copy.StoreUnavailableError, label).toBe(false);
      }
      expect(made instanceof TypeError, label).toBe(true);
      expect(made instanceof RangeError, label).toBe(false);
      expect(made, label).toMatchObject({ code: 'INVALID_INPUT', name: 'TypeError' });
      expect(made.cause, label).toBe(cause);
      expect(made.stack?.split('\n')[0], label).toBe('TypeError: bad option');
      expect(Object.keys(made), label).toEqual(['code']);
    }
    expect(invalidTypeInput('no cause')).not.toHaveProperty('cause');
  });
});

describe('corerev: a minifier that renames the classes (an app bundle without keepNames)', () => {
  it("this copy's invalidRangeInput and invalidTypeInput errors stay its InvalidInputError and IdemError", () => {
    // esbuild --minify renames `InvalidInputError` to one letter: the error's class is still
    // named InvalidInputError (set explicitly, for other copies), which matched no more.
    const renamed = [
      [InvalidInputError, 'T'],
      [IdemError, 'a'],
    ] as const;
    const original = renamed.map(([cls]) => cls.name);
    for (const [cls, name] of renamed) Object.defineProperty(cls, 'name', { value: name });
    try {
      for (const made of [
        thrown(() => createAdmission({ targetLatencyMs: -1 })),
        esm.invalidTypeInput('bad option'),
      ]) {
        expect(made instanceof InvalidInputError).toBe(true);
        expect(made instanceof IdemError).toBe(true);
        expect(isIdemError(made, 'INVALID_INPUT')).toBe(true);
        expect(made instanceof StoreUnavailableError).toBe(false);
        expect(made instanceof InvalidKeyError).toBe(false);
      }
      // Another copy's (not renamed): told by its class's mark (lastrev), which no renaming
      // changes (by names, renamed here, none matched before).
      expect(cjs.invalidRangeInput('x') instanceof InvalidInputError).toBe(true);
      expect(cjs.invalidRangeInput('x') instanceof InvalidKeyError).toBe(false);
    } finally {
      renamed.forEach(([cls], i) => {
        Object.defineProperty(cls, 'name', { value: original[i] });
      });
    }
  });
});

describe('ManualClock: a clock moved backwards or to no time', () => {
  it('advance and set refuse with INVALID_INPUT, still a RangeError, and leave the clock as it was', () => {
    const clock = new ManualClock(1_000);
    const attempts: [string, () => void][] = [
      ['advance(-1)', () => clock.advance(-1)],
      ['advance(NaN)', () => clock.advance(Number.NaN)],
      ['advance(Infinity)', () => clock.advance(Number.POSITIVE_INFINITY)],
      ["advance('5')", () => clock.advance('5' as never)],
      ['set(999)', () => clock.set(999)],
      ['set(NaN)', () => clock.set(Number.NaN)],
      ['set(Infinity)', () => clock.set(Number.POSITIVE_INFINITY)],
      ["set('2000')", () => clock.set('2000' as never)],
      ['advance(Symbol)', () => clock.advance(Symbol('ms') as never)],
      ['advance(hostile)', () => clock.advance(hostile as never)],
      ['set(hostile)', () => clock.set(hostile as never)],
      ['set(BigInt)', () => clock.set(5000n as never)],
    ];
    for (const [label, attempt] of attempts) {
      expectTypedRange(thrown(attempt), label);
      expect(clock.now(), label).toBe(1_000);
    }
    clock.advance(0);
    clock.advance(5);
    clock.set(1_005);
    clock.set(2_000);
    expect(clock.now()).toBe(2_000);
  });

  it('a clock cannot start at no time', () => {
    expectTypedRange(
      thrown(() => new ManualClock(Number.NaN)),
      'NaN',
    );
    expect(new ManualClock().now()).toBe(Date.UTC(2026, 0, 1));
  });
});
