/**
 * coreerr30: the leftovers of the review of core's error copies.
 * - `operationError` (and `policyError`) was an enumerable own property of the copy: a
 *   logger's `JSON.stringify` of the policy's error dumped the operation's error with it, and
 *   threw on a cycle in it. Now not enumerable, as `cause` (and `AggregateError`'s `errors`).
 * - What to copy was told by `Object.prototype.toString`, which `Symbol.toStringTag` decides:
 *   a class of the app's declaring a tag was thrown without the operation's error, a `Map`
 *   subclass declaring `'Object'` got a broken copy, `{ [Symbol.toStringTag]: 'Error' }` was
 *   copied as an `Error` with a stack. Now told by brand checks.
 * - `ReplayedFailureError`'s message held the recorded message whole (10 MB recorded, 10 MB
 *   on every replay); now its first 1,024 characters, `stored` keeps it whole.
 */
import { types } from 'node:util';
import { runInNewContext } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { everythingFinal, ReplayedFailureError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import {
  drainPolicyEngines,
  policyEngine,
  policyThrowsOnFailure as policyThrows,
  thrownWith,
} from './support/policy-engine.js';
import { rejection } from './support/settle.js';

afterEach(drainPolicyEngines);

/**
 * What `execute` throws when the operation fails and the policy throws `thrown`, boxed: a
 * thenable thrown (a Promise) is not adopted by a `.then` on the way.
 */
async function thrownBoxed(thrown: unknown): Promise<{ error: unknown }> {
  const idem = policyEngine(new FakeStore(), {
    isFinal: (settled) => {
      if (!settled.ok) throw thrown;
      return true;
    },
  });
  try {
    await idem.execute({ key: 'k' }, async () => {
      throw new Error('op');
    });
  } catch (error) {
    return { error };
  }
  throw new Error('expected a rejection');
}

/** An operation error that `JSON.stringify` cannot take (a cycle). */
function cyclicError(message: string): Error {
  const error = new Error(message) as Error & { self?: unknown };
  error.self = error;
  expect(() => JSON.stringify(error)).toThrow(TypeError);
  return error;
}

describe('coreerr30: the carried error is not enumerable', () => {
  it("the copy of a policy's error: operationError is there, not enumerable; JSON.stringify of it works", async () => {
    const opError = cyclicError('op');
    for (const thrown of [new Error('policy bug'), { reason: 'policy bug' }]) {
      const error = (await policyThrows(thrown, opError)) as Record<string, unknown>;
      expect(error).not.toBe(thrown);
      expect(error.operationError).toBe(opError);
      expect(Object.getOwnPropertyDescriptor(error, 'operationError')).toMatchObject({
        enumerable: false,
        writable: true,
        configurable: true,
      });
      expect(Object.keys(error)).not.toContain('operationError');
      expect({ ...error }).not.toHaveProperty('operationError');
      expect(() => JSON.stringify(error)).not.toThrow();
      expect(JSON.stringify(error)).not.toContain('op');
    }
  });

  it("the copy of a store's error: policyError is there, not enumerable", async () => {
    const bug = cyclicError('policy bug');
    const storeError = Object.assign(new Error('store down'), { code: 'ECONNRESET' });
    const copy = (await thrownWith(storeError, bug)) as Record<string, unknown>;
    expect(copy).not.toBe(storeError);
    expect(copy.policyError).toBe(bug);
    expect(Object.getOwnPropertyDescriptor(copy, 'policyError')?.enumerable).toBe(false);
    expect(Object.keys(copy)).not.toContain('policyError');
    expect(() => JSON.stringify(copy)).not.toThrow();
    expect(JSON.stringify(copy)).not.toContain('policy');
  });
});

describe('coreerr30: what is copied is told by brand checks, not by Symbol.toStringTag', () => {
  it('an instance of a class of the app that declares a tag is copied and carries the operation error', async () => {
    class Problem {
      constructor(readonly status: number) {}
      get [Symbol.toStringTag](): string {
        return 'Problem';
      }
      describe(): string {
        return `problem ${this.status}`;
      }
    }
    const thrown = new Problem(400);
    const opError = new Error('op');
    const error = (await policyThrows(thrown, opError)) as Problem & { operationError?: unknown };
    expect(error).not.toBe(thrown);
    expect(error).toBeInstanceOf(Problem);
    expect(error.describe()).toBe('problem 400');
    expect(Object.prototype.toString.call(error)).toBe('[object Problem]');
    expect(types.isNativeError(error)).toBe(false);
    expect(error.operationError).toBe(opError);
    expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
  });

  it("a class of the app's whose tag names a runtime class (not extending it) is copied too", async () => {
    class NotAUrl {
      readonly href = 'x';
      get [Symbol.toStringTag](): string {
        return 'URL';
      }
    }
    const opError = new Error('op');
    const error = (await policyThrows(new NotAUrl(), opError)) as { operationError?: unknown };
    expect(error).toBeInstanceOf(NotAUrl);
    expect(error.operationError).toBe(opError);
  });

  it('an error class that declares a tag is copied as a native error', async () => {
    class TaggedBug extends Error {
      get [Symbol.toStringTag](): string {
        return 'TaggedBug';
      }
    }
    const opError = new Error('op');
    const error = (await policyThrows(new TaggedBug('policy bug'), opError)) as TaggedBug & {
      operationError?: unknown;
    };
    expect(error).toBeInstanceOf(TaggedBug);
    expect(types.isNativeError(error)).toBe(true);
    expect(error.message).toBe('policy bug');
    expect(error.operationError).toBe(opError);
  });

  it('a plain object tagged "Error" is copied as a plain object, not made an Error', async () => {
    const thrown = { [Symbol.toStringTag]: 'Error', reason: 'policy bug' };
    const opError = new Error('op');
    const error = (await policyThrows(thrown, opError)) as Record<string, unknown>;
    // Not `expect(error).not.toBe(thrown)`: vitest's equality takes the tag for an error and
    // recurses without end on such an object.
    expect(error === thrown).toBe(false);
    expect(Object.getPrototypeOf(error)).toBe(Object.prototype);
    expect(types.isNativeError(error)).toBe(false);
    expect(Object.hasOwn(error, 'stack')).toBe(false);
    expect(error.reason).toBe('policy bug');
    expect(error.operationError).toBe(opError);
    expect(error.cause).toBe(opError);
  });

  it("built-in subclasses tagged 'Object' are thrown as they are, whole (no broken copy)", async () => {
    /** `target` declaring the tag `'Object'` of its own (its prototype's may be read-only). */
    const untagged = <T extends object>(target: T): T =>
      Object.defineProperty(target, Symbol.toStringTag, { value: 'Object' });
    class Rules extends Map<string, string> {
      override get [Symbol.toStringTag](): string {
        return 'Object';
      }
    }
    class When extends Date {
      get [Symbol.toStringTag](): string {
        return 'Object';
      }
    }
    class Pending extends Promise<string> {
      override get [Symbol.toStringTag](): string {
        return 'Object';
      }
    }
    class Where extends URL {
      get [Symbol.toStringTag](): string {
        return 'Object';
      }
    }
    const rules = new Rules([['rule', 'x']]);
    const when = new When(0);
    const pending = Pending.resolve('done') as Pending;
    const where = new Where('http://127.0.0.1/policy');
    const list = untagged(['a']);
    const set = untagged(new Set(['a']));
    const bytes = untagged(new Uint8Array([1]));
    const pattern = untagged(/a/);
    const boxed = untagged(Object(1n) as object);
    for (const thrown of [rules, when, pending, where, list, set, bytes, pattern, boxed]) {
      expect(Object.prototype.toString.call(thrown)).toBe('[object Object]');
      const { error } = await thrownBoxed(thrown);
      expect(error).toBe(thrown);
      expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
    }
    expect(((await thrownBoxed(rules)).error as Rules).get('rule')).toBe('x');
    expect(((await thrownBoxed(when)).error as When).getTime()).toBe(0);
    expect(await ((await thrownBoxed(pending)).error as Pending)).toBe('done');
    expect(((await thrownBoxed(where)).error as Where).pathname).toBe('/policy');
  });

  it("another realm's built-ins and a host object are thrown as they are", async () => {
    const map = runInNewContext('new Map([["rule", "x"]])') as Map<string, string>;
    const response = new Response('body');
    const headers = new Headers({ a: 'b' });
    for (const thrown of [map, response, headers]) {
      expect(await policyThrows(thrown, new Error('op'))).toBe(thrown);
      expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
    }
  });

  it("another realm's error is copied as a native error", async () => {
    const foreign = runInNewContext('new TypeError("policy bug")') as Error;
    const opError = new Error('op');
    const error = (await policyThrows(foreign, opError)) as Error & { operationError?: unknown };
    expect(error).not.toBe(foreign);
    expect(types.isNativeError(error)).toBe(true);
    expect(error.message).toBe('policy bug');
    expect(error.operationError).toBe(opError);
  });
});

describe('coreerr30: what is no native error is not made one', () => {
  it('a Proxy of an error is copied as an ordinary object on its prototype, not made a native error', async () => {
    const target = new TypeError('policy bug');
    const thrown = new Proxy(target, {});
    const opError = new Error('op');
    const error = (await policyThrows(thrown, opError)) as TypeError & { operationError?: unknown };
    expect(error === thrown).toBe(false);
    expect(types.isNativeError(error)).toBe(false);
    expect(error).toBeInstanceOf(TypeError);
    expect(error.message).toBe('policy bug');
    expect(error.operationError).toBe(opError);
    expect(Object.hasOwn(target, 'operationError')).toBe(false);
  });

  it("another realm's object is told by its tag, as before: a Promise is thrown as it is, a plain object copied", async () => {
    const foreign = runInNewContext('Promise.resolve(1)') as Promise<number>;
    const { error } = await thrownBoxed(foreign);
    expect(error).toBe(foreign);
    expect(await (error as Promise<number>)).toBe(1);
    const plain = runInNewContext('({ reason: "policy bug" })') as Record<string, unknown>;
    const copy = (await policyThrows(plain, new Error('op'))) as Record<string, unknown>;
    expect(copy === plain).toBe(false);
    expect(copy.reason).toBe('policy bug');
    expect(copy.operationError).toMatchObject({ message: 'op' });
  });
});

describe("coreerr30: a replayed failure's message is bounded", () => {
  it('shows the first 1,024 characters of the message and its length; stored keeps it whole', () => {
    const message = 'x'.repeat(10_000_000);
    const error = new ReplayedFailureError({ name: 'Error', message, code: 'E_BIG' });
    expect(error.message.length).toBeLessThan(1_100);
    expect(error.message).toBe(`Replayed failure: Error: ${'x'.repeat(1_024)}… (10000000 chars)`);
    expect(error.stored.message).toBe(message);
    expect(error.stored.code).toBe('E_BIG');
    const named = new ReplayedFailureError({ name: 'N'.repeat(100_000), message: 'boom' });
    expect(named.message).toBe(`Replayed failure: ${'N'.repeat(128)}… (100000 chars): boom`);
  });

  it('a short one is shown as before; a cut never splits a surrogate pair', () => {
    expect(new ReplayedFailureError({ name: 'TypeError', message: 'boom' }).message).toBe(
      'Replayed failure: TypeError: boom',
    );
    const exact = 'y'.repeat(1_024);
    expect(new ReplayedFailureError({ name: 'E', message: exact }).message).toBe(
      `Replayed failure: E: ${exact}`,
    );
    const paired = `${'y'.repeat(1_023)}😀tail`;
    const shown = new ReplayedFailureError({ name: 'E', message: paired }).message;
    expect(shown).toBe(`Replayed failure: E: ${'y'.repeat(1_023)}… (${paired.length} chars)`);
  });

  it('through execute: every replay of a failure recorded with a long message is bounded', async () => {
    const idem = policyEngine(new FakeStore(), { isFinal: everythingFinal });
    const message = 'z'.repeat(50_000);
    let runs = 0;
    const operation = async () => {
      runs++;
      throw new Error(message);
    };
    expect(((await rejection(idem.execute({ key: 'k' }, operation))) as Error).message).toBe(
      message,
    );
    for (let i = 0; i < 2; i++) {
      const replayed = (await rejection(
        idem.execute({ key: 'k' }, operation),
      )) as ReplayedFailureError;
      expect(replayed).toBeInstanceOf(ReplayedFailureError);
      expect(replayed.message).toBe(`Replayed failure: Error: ${'z'.repeat(1_024)}… (50000 chars)`);
      expect(replayed.stored).toEqual({ name: 'Error', message });
    }
    expect(runs).toBe(1);
  });
});
