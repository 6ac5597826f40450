/**
 * lastrev: the copy of a store's error that carries `policyError` (see coreleft-policy-error)
 * is made without running the error's constructor, so a getter of its class reading a private
 * field (`#detail`) threw a TypeError on it where it answered on the store's error.
 */
import { afterEach, expect, it } from 'vitest';
import { createIdempotency, type IdempotencyStore, StoreFullError } from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const engines: { drain(ms?: number): Promise<unknown> }[] = [];
afterEach(async () => {
  for (const engine of engines.splice(0)) await engine.drain(2_000);
});

/** What `execute` throws when `complete` throws `storeError` and the policy throws `bug`. */
async function thrownWith(storeError: unknown, bug: Error): Promise<unknown> {
  const inner = new FakeStore();
  const store: IdempotencyStore = {
    capabilities: inner.capabilities,
    acquire: (input) => inner.acquire(input),
    get: (key) => inner.get(key),
    release: (input) => inner.release(input),
    extend: (input) => inner.extend(input),
    complete: async () => {
      throw storeError;
    },
  };
  const idem = createIdempotency<unknown>({
    store,
    heartbeatMs: false,
    leaseMs: 3_000,
    isFinal: () => {
      throw bug;
    },
  });
  engines.push(idem);
  return idem
    .execute({ key: 'k', payload: {} } as never, async () => 1)
    .then(
      () => undefined,
      (error: unknown) => error,
    );
}

class DetailedFull extends StoreFullError {
  #detail: string;
  constructor(message: string, detail: string) {
    super(message);
    this.#detail = detail;
  }
  get detail(): string {
    return this.#detail;
  }
}

it('a getter reading a private field answers on the copy as on the store error', async () => {
  const shared = new DetailedFull('full', 'shard 3');
  const bug = new Error('policy bug');
  const thrown = (await thrownWith(shared, bug)) as DetailedFull & { policyError?: unknown };
  expect(thrown).toBeInstanceOf(DetailedFull);
  expect(thrown.policyError).toBe(bug);
  expect(thrown.detail).toBe('shard 3');
  // The shared error is untouched.
  expect(Object.hasOwn(shared, 'policyError')).toBe(false);
  expect(Object.hasOwn(shared, 'detail')).toBe(false);
});
