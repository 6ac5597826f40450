import { describe, expect, it } from 'vitest';
import {
  type AcquireInput,
  admitStore,
  createAdmission,
  createIdempotency,
  type IdempotencyStore,
  type StoreCallContext,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { gate, rejection } from './support/settle.js';

const oneSlot = (maxQueue = 100) =>
  createAdmission({
    targetLatencyMs: 1_000,
    initialLimit: 1,
    minLimit: 1,
    maxLimit: 1,
    maxQueue,
    maxWaitMs: 60_000,
  });

/** `inner` whose acquire is applied at once and then answers only by its signal aborting. */
function appliedThenCut(inner: FakeStore): IdempotencyStore {
  return {
    capabilities: inner.capabilities,
    acquire: async (input: AcquireInput, call?: StoreCallContext) => {
      await inner.acquire(input);
      const signal = call?.signal;
      return new Promise((_, reject) => {
        if (signal?.aborted) reject(signal.reason);
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
    },
    complete: (input) => inner.complete(input),
    release: (input) => inner.release(input),
    extend: (input) => inner.extend(input),
    get: (key) => inner.get(key),
  };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('admission: "rejected as unsent" is only said of calls never sent (rev33e)', () => {
  it('a queued acquire that got its slot and was applied before core gave up is not reported unsent, and is given back', async () => {
    const admission = oneSlot();
    const inner = new FakeStore();
    const idem = createIdempotency<string>({
      store: admitStore(appliedThenCut(inner), admission),
      heartbeatMs: false,
      storeTimeoutMs: 150,
      leaseMs: 60_000,
    });
    const blocker = gate<undefined>();
    const blocking = admission.run('sheddable', () => blocker.promise);
    const failure = rejection(idem.begin({ key: 'k' }));
    await sleep(30);
    // The slot frees: the acquire leaves the queue and is sent (applied at once).
    blocker.open(undefined);
    await blocking;
    const error = await failure;
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as StoreUnavailableError).unsent).toBe(false);
    expect(inner.calls.acquire).toBe(1);
    // Given back (owner-checked release), not left to a dead owner for the 60 s lease.
    for (let i = 0; i < 40 && inner.calls.release === 0; i++) await sleep(25);
    expect(inner.calls.release).toBeGreaterThanOrEqual(1);
    const [record] = [...inner.records.values()];
    expect(record?.status).not.toBe('in_progress');
    await idem.drain(1_000);
  });

  it('an abort that comes after the waiter was started does not turn its answer into an unsent rejection', async () => {
    const admission = oneSlot();
    const blocker = gate<undefined>();
    const blocking = admission.run('sheddable', () => blocker.promise);
    const controller = new AbortController();
    let sent = 0;
    const answer = gate<string>();
    const queued = admission.run(
      'sheddable',
      () => {
        sent++;
        // Aborted from inside the call itself, once it is on its way.
        controller.abort(new Error('gave up'));
        return answer.promise;
      },
      { signal: controller.signal },
    );
    blocker.open(undefined);
    await blocking;
    answer.open('applied');
    await expect(queued).resolves.toBe('applied');
    expect(sent).toBe(1);
    expect(admission.inFlight).toBe(0);
  });

  it('an abort in the same turn as the slot frees (before the queue is served) leaves the call unsent and never calls it', async () => {
    const admission = oneSlot();
    const controller = new AbortController();
    const blocking = admission.run('sheddable', async () => {
      // The caller gives up just as the slot is about to be freed.
      controller.abort(new Error('gave up'));
      return 'done';
    });
    let sent = 0;
    const queued = rejection(
      admission.run(
        'sheddable',
        async () => {
          sent++;
        },
        { signal: controller.signal },
      ),
    );
    await blocking;
    expect(await queued).toMatchObject({ code: 'STORE_UNAVAILABLE', unsent: true });
    expect(sent).toBe(0);
    expect(admission.inFlight).toBe(0);
    expect(admission.waiting).toBe(0);
  });

  it('the queue stays bounded by maxQueue with waiters coming and leaving by abort, and frees no extra slot', async () => {
    const admission = oneSlot(2);
    const blocker = gate<undefined>();
    const blocking = admission.run('sheddable', () => blocker.promise);
    for (let round = 0; round < 5; round++) {
      const controllers = [new AbortController(), new AbortController()];
      const waiting = controllers.map((c) =>
        rejection(admission.run('sheddable', async () => 'x', { signal: c.signal })),
      );
      expect(admission.waiting).toBe(2);
      // A third is refused: the queue is full.
      expect(await rejection(admission.run('sheddable', async () => 'y'))).toMatchObject({
        unsent: true,
      });
      for (const c of controllers) c.abort(new Error('gave up'));
      for (const w of waiting) expect(await w).toMatchObject({ unsent: true });
      expect(admission.waiting).toBe(0);
    }
    expect(admission.inFlight).toBe(1);
    blocker.open(undefined);
    await blocking;
    expect(admission.inFlight).toBe(0);
  });
});
