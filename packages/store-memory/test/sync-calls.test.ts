import {
  answersSynchronously,
  createIdempotency,
  type IdempotencyStore,
  StoreUnavailableError,
  SYNC_FORM,
  syncFormOf,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

type Method<I, R> = (input: I) => Promise<R>;

/**
 * `method`'s synchronous form behind a promise form that must not be called: a method built
 * with `answersSynchronously` (only such a method's own `SYNC_FORM` counts) whose form is
 * then replaced in place by `method`'s.
 */
function directOnly<I, R>(method: Method<I, R>): Method<I, R> {
  const sync = syncFormOf(method);
  if (!sync) throw new Error('the method has no synchronous form');
  return withSyncForm((_input: I): R => {
    throw new Error('the promise form was called');
  }, sync);
}

/** A method whose promise form answers `promised` and whose synchronous form is `sync`. */
function withSyncForm<I, R>(promised: (input: I) => R, sync: (input: I) => R): Method<I, R> {
  const method = answersSynchronously(promised);
  Object.defineProperty(method, SYNC_FORM, { value: sync, writable: true, configurable: true });
  return method;
}

describe('synchronous store calls (the memory store answers before it returns)', () => {
  it('the engine calls acquire, complete and release through their synchronous forms', async () => {
    const memory = createMemoryStore();
    const store: IdempotencyStore = {
      capabilities: memory.capabilities,
      acquire: directOnly(memory.acquire),
      complete: directOnly(memory.complete),
      release: directOnly(memory.release),
      extend: memory.extend,
      get: memory.get,
    };
    const idem = createIdempotency({ store });
    await expect(idem.execute({ key: 'a' }, async () => ({ n: 1 }))).resolves.toEqual({
      value: { n: 1 },
      replayed: false,
    });
    await expect(idem.execute({ key: 'a' }, async () => ({ n: 2 }))).resolves.toEqual({
      value: { n: 1 },
      replayed: true,
    });
    // A failure is released (synchronously too), so the next call runs again.
    await expect(
      idem.execute({ key: 'b' }, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    await expect(idem.execute({ key: 'b' }, async () => 'ran')).resolves.toEqual({
      value: 'ran',
      replayed: false,
    });
    await memory.close();
  });

  it('a wrapper that replaces a method has no synchronous form and keeps its time limit', async () => {
    const memory = createMemoryStore();
    const hanging: IdempotencyStore = { ...memory, acquire: () => new Promise(() => {}) };
    expect(syncFormOf(hanging.acquire)).toBeUndefined();
    expect(syncFormOf(hanging.complete)).toBe(syncFormOf(memory.complete));
    const idem = createIdempotency({ store: hanging, storeTimeoutMs: 50 });
    const error = await idem.execute({ key: 'a' }, async () => 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toBe('Store acquire timed out after 50 ms');
    await memory.close();
  });

  it('a synchronous form that throws gives the typed error; a failed complete is retried until it lands', async () => {
    const memory = createMemoryStore();
    const acquire = syncFormOf(memory.acquire)!;
    const complete = syncFormOf(memory.complete)!;
    let acquireFails = 1;
    let completeFails = 1;
    const store: IdempotencyStore = { ...memory };
    store.acquire = withSyncForm(acquire, (input: Parameters<typeof acquire>[0]) => {
      if (acquireFails-- > 0) throw new Error('connection reset (injected)');
      return acquire(input);
    });
    store.complete = withSyncForm(complete, (input: Parameters<typeof complete>[0]) => {
      if (completeFails-- > 0) throw new Error('connection reset (injected)');
      return complete(input);
    });
    const idem = createIdempotency({ store, leaseMs: 2_000 });
    const error = await idem.execute({ key: 'a' }, async () => 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toBe('Store acquire failed: connection reset (injected)');
    let runs = 0;
    await expect(
      idem.execute({ key: 'b' }, async () => {
        runs++;
        return 'once';
      }),
    ).resolves.toEqual({ value: 'once', replayed: false });
    expect(completeFails).toBeLessThan(0); // the failed attempt, then the one that landed
    await expect(idem.execute({ key: 'b' }, async () => 'twice')).resolves.toEqual({
      value: 'once',
      replayed: true,
    });
    expect(runs).toBe(1);
    await memory.close();
  });
});
