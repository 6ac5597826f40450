import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import * as esm from '../src/index.js';

// rev11: IdemError's `static [Symbol.hasInstance]` (errors.ts) recognises another copy's errors
// by a Symbol.for mark and class names. Attacks: non-idem objects, wrong subclasses, throws.

const require = createRequire(import.meta.url);
const cjs = require('@idem/core') as typeof esm;

describe('rev11 instanceof across copies of core', () => {
  it('objects without the mark are never idem errors, whatever their class is named', () => {
    class StoreFullError extends Error {}
    const impostors: unknown[] = [
      {},
      [],
      new Error('x'),
      new StoreFullError('x'),
      Object.create(null),
      { constructor: esm.StoreFullError, code: 'STORE_FULL' },
      () => {},
      42,
      'StoreFullError',
      null,
      undefined,
    ];
    for (const value of impostors) {
      expect(value instanceof esm.IdemError).toBe(false);
      expect(value instanceof esm.StoreFullError).toBe(false);
    }
  });

  it("another copy's error is never taken for a different subclass", () => {
    const other = new cjs.StoreUnavailableError('u');
    expect(other instanceof esm.StoreUnavailableError).toBe(true);
    expect(other instanceof esm.IdemError).toBe(true);
    expect(other instanceof esm.StoreFullError).toBe(false);
    expect(other instanceof esm.LeaseLostError).toBe(false);
    expect(new cjs.IdemError('STORE_FULL' as never, 'm') instanceof esm.StoreFullError).toBe(false);
    // A subclass of another copy's class is an instance of this copy's base of that name.
    class Mine extends cjs.StoreFullError {}
    expect(new Mine('x') instanceof esm.StoreFullError).toBe(true);
    expect(new Mine('x') instanceof esm.OutcomeTooLargeError).toBe(false);
  });

  it('a very deep prototype chain is walked a bounded number of steps', () => {
    let proto: object = esm.IdemError.prototype;
    for (let i = 0; i < 1_000; i++) proto = Object.create(proto);
    const deep = Object.create(proto);
    // Same copy: the native walk finds it.
    expect(deep instanceof esm.IdemError).toBe(true);
    const start = performance.now();
    for (let i = 0; i < 1_000; i++) void (deep instanceof cjs.StoreFullError);
    expect(performance.now() - start).toBeLessThan(1_000);
  });

  // FIXED (was FINDING LOW): an app's own IdemError subclass that happens to share a core class's name (StoreFullError, InProgressError...) is taken for core's class (instanceof by name, same copy), so the engine/consumers give it core's meaning
  it("an app's own subclass named like a core class is not core's class", () => {
    class InProgressError extends esm.IdemError<'APP_BUSY'> {
      constructor() {
        super('APP_BUSY', 'the app is busy');
      }
    }
    const mine = new InProgressError();
    expect(mine instanceof esm.IdemError).toBe(true);
    expect(mine instanceof esm.InProgressError).toBe(false);
  });

  // FIXED (was FINDING LOW): instanceof IdemError now reads a prototype's constructor and its name, so it throws for a value whose class has a throwing static `name` getter (the native check returned false)
  it('instanceof never throws for a value native instanceof answers false for', () => {
    class Odd {
      readonly field = 1;
      static get name(): string {
        throw new Error('name read');
      }
    }
    const value = new Odd();
    expect(() => value instanceof esm.IdemError).not.toThrow();
  });

  it('a proxy value: a getPrototypeOf trap that throws throws as natively (no new throw)', () => {
    const value = new Proxy(
      {},
      {
        getPrototypeOf() {
          throw new Error('trap');
        },
      },
    );
    expect(() => value instanceof Error).toThrow('trap');
    expect(() => value instanceof esm.IdemError).toThrow('trap');
  });
});
