/**
 * rev32b: the suite's spy of an integration's store hands each call's `StoreCallContext`
 * (core's time-limit signal) on to the store it wraps. Before, it dropped it, so a store that
 * cuts its requests with that signal never got it under the suite.
 */
import { createIdempotency, type IdempotencyStore, type StoreCallContext } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { expect, it } from 'vitest';
import { spyStore } from '../src/index.js';

it('spyStore passes the engine call context on to the store it wraps', async () => {
  const memory = createMemoryStore({ sweepIntervalMs: 0 });
  const contexts = new Map<string, StoreCallContext | undefined>();
  const seen =
    <A, R>(name: string, method: (input: A) => Promise<R>) =>
    (input: A, call?: StoreCallContext) => {
      contexts.set(name, call);
      return method(input);
    };
  const inner: IdempotencyStore = {
    capabilities: memory.capabilities,
    acquire: seen('acquire', (input) => memory.acquire(input)),
    complete: seen('complete', (input) => memory.complete(input)),
    release: seen('release', (input) => memory.release(input)),
    extend: seen('extend', (input) => memory.extend(input)),
    get: (key) => memory.get(key),
  };
  const idem = createIdempotency<string>({ store: spyStore(inner).store, storeTimeoutMs: 1_000 });
  await idem.execute({ key: 'done', scope: 's' }, async () => 'v');
  await idem
    .execute({ key: 'failed', scope: 's' }, async () => {
      throw new Error('not final');
    })
    .catch(() => {});
  for (const name of ['acquire', 'complete', 'release'])
    expect(contexts.get(name)?.signal, name).toBeInstanceOf(AbortSignal);
  await idem.drain(1_000);
});
