/**
 * coreleft2: when an operation fails and the outcome policy (`isFinal`) throws about that
 * failure, `execute` releases the key and throws the policy's error. The operation's own error
 * was lost. It now rides on a copy of the policy's error as `operationError` (and as `cause`
 * when the policy's error has none); what the policy threw is never changed, so a policy that
 * throws one shared error for every call never passes one call's failure to another caller.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidInputError, isIdemError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { drainPolicyEngines, policyEngine as setup } from './support/policy-engine.js';
import { rejection } from './support/settle.js';

afterEach(drainPolicyEngines);

/** A policy that throws `thrown` about every failure (keeps successes). */
const throwingOnFailure = (thrown: unknown) => (settled: { ok: boolean }) => {
  if (!settled.ok) throw thrown;
  return true;
};

const failing = (error: unknown) => async () => {
  throw error;
};

describe("coreleft2: a policy fault about a failure keeps the operation's error", () => {
  it('the caller gets the policy error (same class, message, stack) carrying the operation error as operationError and cause; the key is released', async () => {
    const store = new FakeStore();
    const bug = new TypeError('policy bug');
    const idem = setup(store, { isFinal: throwingOnFailure(bug) });
    const opError = new Error('downstream down');
    const error = await rejection(idem.execute({ key: 'k' }, failing(opError)));
    expect(error).toBeInstanceOf(TypeError);
    expect(error).toMatchObject({ name: 'TypeError', message: 'policy bug' });
    expect((error as Error).stack).toBe(bug.stack);
    expect((error as { operationError?: unknown }).operationError).toBe(opError);
    expect((error as Error).cause).toBe(opError);
    // What the policy threw is untouched.
    expect(Object.hasOwn(bug, 'operationError')).toBe(false);
    expect(Object.hasOwn(bug, 'cause')).toBe(false);
    // Released as before: a retry runs the operation again.
    expect(await idem.execute({ key: 'k' }, async () => 'second')).toEqual({
      value: 'second',
      replayed: false,
    });
  });

  it("a policy error with a cause of its own keeps it; the operation's error is operationError", async () => {
    const own = new Error('why the policy failed');
    const bug = new Error('policy bug', { cause: own });
    const idem = setup(new FakeStore(), { isFinal: throwingOnFailure(bug) });
    const opError = new Error('op failed');
    const error = await rejection(idem.execute({ key: 'k' }, failing(opError)));
    expect((error as Error).cause).toBe(own);
    expect((error as { operationError?: unknown }).operationError).toBe(opError);
  });

  it("one policy error shared by every call: each caller gets its own operation's error, never another's, and the shared one is unchanged", async () => {
    const shared = new Error('policy bug (shared)');
    const store = new FakeStore();
    const idem = setup(store, { isFinal: throwingOnFailure(shared) });
    const errors = [new Error('op a'), new Error('op b'), new Error('op c')];
    const thrown = await Promise.all(
      errors.map((opError, i) => rejection(idem.execute({ key: `k${i}` }, failing(opError)))),
    );
    thrown.forEach((error, i) => {
      expect(error).not.toBe(shared);
      expect(error).toMatchObject({ message: 'policy bug (shared)' });
      expect((error as { operationError?: unknown }).operationError, `call ${i}`).toBe(errors[i]);
      expect((error as Error).cause, `call ${i}`).toBe(errors[i]);
    });
    expect(Object.hasOwn(shared, 'operationError')).toBe(false);
    expect(Object.hasOwn(shared, 'cause')).toBe(false);
  });

  it('a policy that answers a Promise about a failure: its InvalidInputError carries the operation error', async () => {
    const idem = setup(new FakeStore(), {
      isFinal: (settled) => (settled.ok ? true : (Promise.resolve(true) as never)),
    });
    const opError = new Error('op failed');
    const error = await rejection(idem.execute({ key: 'k' }, failing(opError)));
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(isIdemError(error, 'INVALID_INPUT')).toBe(true);
    expect((error as InvalidInputError).message).toMatch(/Promise/);
    expect((error as InvalidInputError).operationError).toBe(opError);
  });

  it("a policy that rethrows the operation's own error: the caller gets that error as it is", async () => {
    const idem = setup(new FakeStore(), {
      isFinal: (settled) => {
        if (!settled.ok) throw settled.error;
        return true;
      },
    });
    const opError = new Error('op failed');
    const error = await rejection(idem.execute({ key: 'k' }, failing(opError)));
    expect(error).toBe(opError);
    expect(Object.hasOwn(opError, 'operationError')).toBe(false);
  });

  it('what cannot carry it is thrown as it is: a non-object, a frozen error', async () => {
    for (const thrown of [undefined, 'policy bug', 0, null]) {
      const idem = setup(new FakeStore(), { isFinal: throwingOnFailure(thrown) });
      const error = await rejection(idem.execute({ key: 'k' }, failing(new Error('op'))));
      expect(Object.is(error, thrown), String(thrown)).toBe(true);
    }
    const frozen = Object.freeze(new Error('policy bug (frozen)'));
    const idem = setup(new FakeStore(), { isFinal: throwingOnFailure(frozen) });
    expect(await rejection(idem.execute({ key: 'k' }, failing(new Error('op'))))).toBe(frozen);
  });

  it('the copy of a policy error whose class getter reads a private field still answers it', async () => {
    class PolicyBug extends Error {
      #rule: string;
      constructor(rule: string) {
        super(`policy bug in ${rule}`);
        this.#rule = rule;
      }
      get rule(): string {
        return this.#rule;
      }
    }
    const bug = new PolicyBug('retryable-5xx');
    const idem = setup(new FakeStore(), { isFinal: throwingOnFailure(bug) });
    const opError = new Error('op');
    const error = await rejection(idem.execute({ key: 'k' }, failing(opError)));
    expect(error).toBeInstanceOf(PolicyBug);
    expect((error as PolicyBug).rule).toBe('retryable-5xx');
    expect((error as { operationError?: unknown }).operationError).toBe(opError);
  });

  it('a success the policy throws about is unchanged: the policy error itself, nothing on it', async () => {
    const bug = new Error('policy bug');
    const idem = setup(new FakeStore(), {
      isFinal: () => {
        throw bug;
      },
    });
    await expect(idem.execute({ key: 'k' }, async () => 'v')).rejects.toBe(bug);
    expect(Object.hasOwn(bug, 'operationError')).toBe(false);
  });
});
