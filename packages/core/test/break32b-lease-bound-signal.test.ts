// break32b: an acquire the engine stops waiting for at its lease's runway (a lease shorter
// than `storeTimeoutMs`) has its call signal aborted then, not only at `storeTimeoutMs`: the
// StoreCallContext promise is "aborts once the engine stopped waiting for that call". Before
// the fix the signal stayed unaborted until `storeTimeoutMs` (here 20 s after the caller had
// its LEASE_LOST), so a store that cuts its request on it (DynamoDB) held the connection on.
import { describe, expect, it } from 'vitest';
import {
  createIdempotency,
  type IdempotencyStore,
  LeaseLostError,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

describe('break32b: the acquire signal at the runway of a short lease', () => {
  it('aborts when begin gives up with LEASE_LOST, its reason a StoreUnavailableError', async () => {
    const memory = new FakeStore();
    let signal: AbortSignal | undefined;
    const store: IdempotencyStore = {
      capabilities: memory.capabilities,
      acquire: (_input, call) => {
        signal = call?.signal;
        return new Promise(() => {});
      },
      complete: (input) => memory.complete(input),
      release: (input) => memory.release(input),
      extend: (input) => memory.extend(input),
      get: (key) => memory.get(key),
    };
    const idem = createIdempotency({ store, leaseMs: 200, storeTimeoutMs: 20_000 });
    const failure = await idem.begin({ key: 'k' }).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(LeaseLostError);
    expect(signal?.aborted).toBe(true);
    expect(signal?.reason).toBeInstanceOf(StoreUnavailableError);
    await idem.drain(0);
  });
});
