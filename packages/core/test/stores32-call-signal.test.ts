/**
 * stores32: every async store call gets a context whose `signal` aborts when the engine's time
 * limit passes (so a store can cut the request: the DynamoDB store destroys its HTTP request),
 * with the engine's StoreUnavailableError as its reason; a call that answers in time leaves it
 * unaborted. Through the engine too: acquire, complete and release all receive it.
 */
import { describe, expect, it } from 'vitest';
import {
  callStore,
  createIdempotency,
  type IdempotencyStore,
  type StoreCallContext,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

describe('the store call context', () => {
  it('aborts at the time limit with the engine error; not when the call answered', async () => {
    let seen: AbortSignal | undefined;
    const late = callStore('acquire', 30, (context) => {
      seen = context.signal;
      return new Promise<never>(() => {});
    });
    await expect(late).rejects.toBeInstanceOf(StoreUnavailableError);
    expect(seen?.aborted).toBe(true);
    expect(seen?.reason).toBeInstanceOf(StoreUnavailableError);

    let quick: AbortSignal | undefined;
    await callStore('acquire', 30, async (context) => {
      quick = context.signal;
      return 1;
    });
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(quick?.aborted).toBe(false);
  });

  it('reaches acquire, complete and release through the engine', async () => {
    const memory = new FakeStore();
    const contexts: Record<string, StoreCallContext | undefined> = {};
    const store: IdempotencyStore = {
      capabilities: memory.capabilities,
      acquire: (input, call) => {
        contexts.acquire = call;
        return memory.acquire(input);
      },
      complete: (input, call) => {
        contexts.complete = call;
        return memory.complete(input);
      },
      release: (input, call) => {
        contexts.release = call;
        return memory.release(input);
      },
      extend: (input) => memory.extend(input),
      get: (key) => memory.get(key),
    };
    const idem = createIdempotency<string>({ store, storeTimeoutMs: 1_000 });
    await idem.execute({ key: 'a', scope: 's' }, async () => 'v');
    await idem
      .execute({ key: 'b', scope: 's' }, async () => {
        throw new Error('no');
      })
      .catch(() => {});
    for (const name of ['acquire', 'complete', 'release'])
      expect(contexts[name]?.signal, name).toBeInstanceOf(AbortSignal);
  });
});
