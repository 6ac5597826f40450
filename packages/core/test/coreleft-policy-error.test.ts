/**
 * coreleft: when an operation succeeds and the outcome policy (`isFinal`) throws about that
 * success (or answers a Promise), `execute` records the success and then throws the policy's
 * error. When the recording itself failed (the store down, the lease lost, the outcome too
 * large or not serialisable), the caller got the recording's error and the policy's error was
 * lost entirely. It is now on that error as `policyError`; the error class is unchanged.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  answersSynchronously,
  type IdempotencyOptions,
  type IdempotencyStore,
  InvalidInputError,
  isIdemError,
  LeaseLostError,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  type OwnerWriteResult,
  StoreFullError,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { drainPolicyEngines, policyEngine as setup } from './support/policy-engine.js';
import { rejection } from './support/settle.js';

afterEach(drainPolicyEngines);

/** `inner`, its `complete` replaced by `complete`. */
function withComplete(inner: FakeStore, complete: IdempotencyStore['complete']): IdempotencyStore {
  return {
    capabilities: inner.capabilities,
    acquire: (input) => inner.acquire(input),
    get: (key) => inner.get(key),
    release: (input) => inner.release(input),
    extend: (input) => inner.extend(input),
    complete,
  };
}

/** A policy that throws `bug` about every success (keeps failures final). */
const throwingOn = (bug: unknown) => (settled: { ok: boolean }) => {
  if (settled.ok) throw bug;
  return true;
};

/** What `execute` over `store` rejects with when its policy throws `bug` about the success. */
function failedRecording(
  store: IdempotencyStore,
  bug: unknown,
  options: Partial<IdempotencyOptions<unknown>> = {},
): Promise<unknown> {
  const idem = setup(store, { isFinal: throwingOn(bug), ...options });
  return rejection(idem.execute({ key: 'k' }, async () => 'v'));
}

describe('coreleft: a policy fault about a success whose recording failed', () => {
  it('store down: the caller gets StoreUnavailableError carrying the policy error; the success lands once the store is back and is replayed', async () => {
    const store = new FakeStore();
    const bug = new Error('policy bug');
    const idem = setup(store, { isFinal: throwingOn(bug) });
    store.always.complete = 'throw';
    let runs = 0;
    const op = async () => {
      runs++;
      return 'charged';
    };
    const error = await rejection(idem.execute({ key: 'k' }, op));
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect(error).toMatchObject({ code: 'STORE_UNAVAILABLE', policyError: bug });
    // The store's own failure is still its cause.
    expect(((error as Error).cause as Error).message).toMatch(/complete failed/);
    // The retries in the background land once the store is back: replayed, never run again.
    delete store.always.complete;
    await idem.drain(2_000);
    expect(await idem.execute({ key: 'k' }, op)).toEqual({ value: 'charged', replayed: true });
    expect(runs).toBe(1);
  });

  it('a policy that answers a Promise: its InvalidInputError rides on the store error', async () => {
    const store = new FakeStore();
    const idem = setup(store, {
      isFinal: (settled) => (settled.ok ? (Promise.resolve(true) as never) : true),
    });
    store.always.complete = 'throw';
    const error = await rejection(idem.execute({ key: 'k' }, async () => 'v'));
    expect(isIdemError(error, 'STORE_UNAVAILABLE')).toBe(true);
    const { policyError } = error as StoreUnavailableError;
    expect(policyError).toBeInstanceOf(InvalidInputError);
    expect((policyError as Error).message).toMatch(/Promise/);
    delete store.always.complete;
  });

  it('the lease lost at the final write: LeaseLostError carrying the policy error', async () => {
    const store = new FakeStore();
    const bug = new Error('policy bug');
    const idem = setup(store, { isFinal: throwingOn(bug) });
    const error = await rejection(
      idem.execute({ key: 'k' }, async () => {
        // Another owner's record now (as after a takeover): the final write is refused.
        store.records.clear();
        return 'v';
      }),
    );
    expect(error).toBeInstanceOf(LeaseLostError);
    expect((error as LeaseLostError).policyError).toBe(bug);
  });

  it('the store refuses the outcome (too large, full): its error carries the policy error', async () => {
    for (const fault of ['too_large', 'full'] as const) {
      const store = new FakeStore();
      store.next.complete.push(fault);
      const bug = new Error(`policy bug ${fault}`);
      const error = await failedRecording(store, bug);
      expect(error, fault).toBeInstanceOf(
        fault === 'too_large' ? OutcomeTooLargeError : StoreFullError,
      );
      expect((error as OutcomeTooLargeError).policyError, fault).toBe(bug);
    }
  });

  it('a value that cannot be serialised: OutcomeNotRecordedError keeps the serializer error as cause and carries the policy error', async () => {
    const store = new FakeStore();
    const bug = new Error('policy bug');
    const idem = setup(store, { isFinal: throwingOn(bug) });
    const error = await rejection(idem.execute({ key: 'k' }, async () => ({ n: 1n })));
    expect(error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(error).toMatchObject({ reason: 'not_serializable', policyError: bug });
    expect((error as Error).cause).toBeInstanceOf(TypeError);
  });

  it('a store that answers at once (a synchronous form): the same, for a failure and a lost lease', async () => {
    for (const answer of ['throws', 'not_owner'] as const) {
      const store = withComplete(
        new FakeStore(),
        answersSynchronously((): OwnerWriteResult => {
          if (answer === 'throws') throw new Error('down (sync)');
          return { ok: false, reason: 'not_owner' } as OwnerWriteResult;
        }),
      );
      const bug = new Error(`policy bug ${answer}`);
      const error = await failedRecording(store, bug, { maxHoldMs: 200 });
      expect(error, answer).toBeInstanceOf(
        answer === 'throws' ? StoreUnavailableError : LeaseLostError,
      );
      expect((error as StoreUnavailableError).policyError, answer).toBe(bug);
    }
  });

  it('a policy that threw undefined: policyError is an own property, undefined; a frozen store error is thrown as it is', async () => {
    const store = new FakeStore();
    store.next.complete.push('full');
    const error = await failedRecording(store, undefined);
    expect(error).toBeInstanceOf(StoreFullError);
    expect(Object.hasOwn(error as object, 'policyError')).toBe(true);
    expect((error as StoreFullError).policyError).toBeUndefined();

    const frozen = Object.freeze(new StoreFullError('full (frozen)'));
    const refusing = withComplete(new FakeStore(), async () => {
      throw frozen;
    });
    expect(await failedRecording(refusing, new Error('policy bug'))).toBe(frozen);
  });

  it('nothing changes when the recording lands (the policy error is thrown) or the policy did not fail', async () => {
    const store = new FakeStore();
    const bug = new Error('policy bug');
    const faulty = setup(store, { isFinal: throwingOn(bug) });
    await expect(faulty.execute({ key: 'a' }, async () => 'v')).rejects.toBe(bug);
    expect(Object.hasOwn(bug, 'policyError')).toBe(false);
    // Without a policy fault, the store's error carries nothing of the kind.
    const plain = setup(store);
    store.always.complete = 'throw';
    const error = await rejection(plain.execute({ key: 'b' }, async () => 'v'));
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect(Object.hasOwn(error as object, 'policyError')).toBe(false);
    delete store.always.complete;
  });
});

describe("corerev: a store error shared between calls never carries one call's policy error to another", () => {
  /** A store whose every `complete` rejects with the one `shared` error (a cached failure). */
  const sharing = (shared: unknown) =>
    withComplete(new FakeStore(), async () => {
      throw shared;
    });

  it('the shared error is left as it was; each caller gets an error of its class with its own policy error', async () => {
    const cause = new Error('connection refused');
    // Not retried (a StoreUnavailableError is retried, then answered by the wait's own error).
    const shared = new StoreFullError('full (cached)');
    shared.cause = cause;
    const store = sharing(shared);
    const bugA = new Error('policy bug A');
    const bugB = new Error('policy bug B');
    // Two calls in flight at once, each with its own policy fault, then one without any.
    const [a, b] = await Promise.all([
      failedRecording(store, bugA),
      rejection(
        setup(store, { isFinal: throwingOn(bugB) }).execute({ key: 'other' }, async () => 'v'),
      ),
    ]);
    const plain = await rejection(setup(store).execute({ key: 'third' }, async () => 'v'));
    expect(Object.hasOwn(shared, 'policyError')).toBe(false);
    for (const [error, bug] of [
      [a, bugA],
      [b, bugB],
    ] as const) {
      expect(error).toBeInstanceOf(StoreFullError);
      expect(error).toMatchObject({ code: 'STORE_FULL', message: 'full (cached)' });
      expect((error as Error).cause).toBe(cause);
      expect((error as StoreFullError).policyError).toBe(bug);
    }
    // The call without a policy fault gets the store's error with nothing of another's on it.
    expect(plain).toBe(shared);
    expect(Object.hasOwn(plain as object, 'policyError')).toBe(false);
  });

  it("the copy keeps the class-specific fields and the stack of the store's error", async () => {
    const shared = new OutcomeTooLargeError(5_000, 1_000);
    const error = await failedRecording(sharing(shared), new Error('policy bug'));
    expect(error).toBeInstanceOf(OutcomeTooLargeError);
    expect(error).toMatchObject({ code: 'OUTCOME_TOO_LARGE', name: shared.name });
    expect((error as Error).stack).toBe(shared.stack);
    for (const field of Object.keys(shared)) {
      expect((error as Record<string, unknown>)[field], field).toEqual(
        (shared as unknown as Record<string, unknown>)[field],
      );
    }
    expect(Object.hasOwn(shared, 'policyError')).toBe(false);
  });
});
