/**
 * Engines over a FakeStore for the tests of outcome policies that throw. A file that uses them
 * calls `afterEach(drainPolicyEngines)` itself: test files share their worker's modules
 * (`isolate: false`), so a hook registered here would run for the first file only.
 */
import {
  createIdempotency,
  type IdempotencyOptions,
  type IdempotencyStore,
} from '../../src/index.js';
import { FakeStore } from './fake-store.js';
import { rejection } from './settle.js';

const engines: { drain(ms?: number): Promise<unknown> }[] = [];

/** Drains the engines made since the last call (each test's, as an `afterEach`). */
export async function drainPolicyEngines(): Promise<void> {
  for (const engine of engines.splice(0)) await engine.drain(2_000);
}

/** An engine over `store` (no heartbeat, a 3 s lease, a 50 ms completion wait), drained after the test. */
export function policyEngine(
  store: IdempotencyStore,
  options: Partial<IdempotencyOptions<unknown>> = {},
) {
  const idem = createIdempotency<unknown>({
    store,
    heartbeatMs: false,
    leaseMs: 3_000,
    completionWaitMs: 50,
    ...options,
  });
  engines.push(idem);
  return idem;
}

/** What `execute` throws when `complete` throws `storeError` and the policy throws `bug`. */
export async function thrownWith(storeError: unknown, bug: Error): Promise<unknown> {
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
  const idem = policyEngine(store, {
    isFinal: () => {
      throw bug;
    },
  });
  return idem
    .execute({ key: 'k', payload: {} } as never, async () => 1)
    .then(
      () => undefined,
      (error: unknown) => error,
    );
}

/** What `execute` throws when the operation throws `opError` and the policy throws `thrown`. */
export function policyThrowsOnFailure(thrown: unknown, opError: unknown): Promise<unknown> {
  const idem = policyEngine(new FakeStore(), {
    isFinal: (settled) => {
      if (!settled.ok) throw thrown;
      return true;
    },
  });
  return rejection(
    idem.execute({ key: 'k' }, async () => {
      throw opError;
    }),
  );
}
