/**
 * rev30a: the adversarial review of coreerr30's error copies.
 * - On Node 20 and 22 the copy of a native error whose `name` getter needs its own class's
 *   state (Node 20's `DOMException`, a class whose `get name()` reads a private field) threw
 *   while it was made: replacing the copy's own lazily formatted `stack` formatted it, which
 *   read that getter on the copy. It was thrown as it is, without `operationError`, while
 *   Node 24 copied it: the copy's own stack is now dropped before the original's is put on it.
 * - The count of own properties that bounds the copy (lead29) came before the brand checks:
 *   `Reflect.ownKeys` of a typed array, a `Buffer` or a `String` object lists one key an
 *   element (a 1 MB `Buffer`: 1.5 s; 10 MB: 36 s and 320 MB, growing with its size), only to
 *   throw it as it is. Built-ins are now told first and never enumerated.
 * - A failure recorded with a `name` (or `message`) that is an object JSON keeps but `String`
 *   cannot convert (`{ toString: 'x' }`) made every replay throw a `TypeError` from the
 *   `ReplayedFailureError` constructor instead of the replayed failure.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { everythingFinal, ReplayedFailureError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import {
  drainPolicyEngines,
  policyEngine,
  policyThrowsOnFailure as policyThrows,
} from './support/policy-engine.js';
import { rejection } from './support/settle.js';

afterEach(drainPolicyEngines);
afterEach(() => {
  vi.restoreAllMocks();
});

/** What the policy's `thrown` became: a copy of it, of class `cls`, carrying the operation's error. */
async function copiedCarrying<E extends Error>(
  thrown: E,
  cls: abstract new (...args: never[]) => E,
): Promise<E> {
  const opError = new Error('op');
  const error = (await policyThrows(thrown, opError)) as E & { operationError?: unknown };
  expect(error).not.toBe(thrown);
  expect(error).toBeInstanceOf(cls);
  expect(error.operationError).toBe(opError);
  return error;
}

describe('rev30a: errors whose name getter needs their class state are copied on every Node', () => {
  it("a policy's DOMException carries the operation's error, its name and message kept", async () => {
    const thrown = new DOMException('cannot clone', 'DataCloneError');
    const error = await copiedCarrying(thrown, DOMException);
    expect(error.name).toBe('DataCloneError');
    expect(error.message).toBe('cannot clone');
    expect(error.stack).toBe(thrown.stack);
    expect(Object.hasOwn(thrown, 'operationError')).toBe(false);
  });

  it('a class whose name getter reads a private field: copied, its stack readable', async () => {
    class PrivateNameError extends Error {
      readonly #name = 'PrivateNameError';
      override get name(): string {
        return this.#name;
      }
    }
    const thrown = new PrivateNameError('policy bug');
    const error = await copiedCarrying(thrown, PrivateNameError);
    expect(error.name).toBe('PrivateNameError');
    expect(String(error.stack)).toBe(String(thrown.stack));
  });
});

describe('rev30a: a built-in thrown is never enumerated to count its properties', () => {
  const enumerated = (spy: { mock: { calls: unknown[][] } }, value: object) =>
    spy.mock.calls.filter(([target]) => target === value).length;

  for (const [label, make] of [
    ['a Uint8Array', () => new Uint8Array(4_096)],
    ['a Buffer', () => Buffer.alloc(4_096)],
    ['a String object', () => new String('s'.repeat(4_096))],
    ['an array', () => new Array(4_096).fill(0)],
  ] as const) {
    it(`${label}: thrown as it is, its keys never listed`, async () => {
      const thrown = make();
      const ownKeys = vi.spyOn(Reflect, 'ownKeys');
      const error = await policyThrows(thrown, new Error('op'));
      const listed = enumerated(ownKeys, thrown);
      ownKeys.mockRestore();
      expect(error).toBe(thrown);
      // One key an element: a 10 MB Buffer took 36 s and 320 MB.
      expect(listed).toBe(0);
    });
  }
});

describe('rev30a: a recorded failure whose name String() cannot convert still replays', () => {
  it('name { toString: "x" } (kept by JSON): the replay is a ReplayedFailureError, the operation ran once', async () => {
    const idem = policyEngine(new FakeStore(), { isFinal: everythingFinal });
    let runs = 0;
    const operation = async () => {
      runs++;
      const error = new Error('boom');
      (error as { name: unknown }).name = { toString: 'x' };
      throw error;
    };
    await rejection(idem.execute({ key: 'k' }, operation));
    for (let i = 0; i < 2; i++) {
      const replayed = (await rejection(
        idem.execute({ key: 'k' }, operation),
      )) as ReplayedFailureError;
      expect(replayed).toBeInstanceOf(ReplayedFailureError);
      expect(replayed.code).toBe('REPLAYED_FAILURE');
      expect(replayed.message).toBe('Replayed failure: (object): boom');
      expect(replayed.stored.name).toEqual({ toString: 'x' });
    }
    expect(runs).toBe(1);
  });

  it('made directly: an unconvertible name or message never makes the constructor throw', () => {
    const bad = { toString: 1, valueOf: 2 } as unknown as string;
    expect(new ReplayedFailureError({ name: bad, message: bad }).message).toBe(
      'Replayed failure: (object): (object)',
    );
    // Convertible ones as before: a number, null, an array (as String() shows them).
    expect(new ReplayedFailureError({ name: 12 as never, message: null as never }).message).toBe(
      'Replayed failure: 12: null',
    );
    expect(new ReplayedFailureError({ name: ['A'] as never, message: 'm' }).message).toBe(
      'Replayed failure: A: m',
    );
  });
});
