/**
 * rev32b: a store that first reads its call's `signal` after the engine's time limit passed
 * (the call waited in an admission queue, or the store reads it only once it has a
 * connection) must get a signal that is already aborted: the engine stopped waiting for that
 * call. Before, the signal was created on that first read, after the timeout had found no
 * controller to abort, and it never aborted: the request it bounded ran on to the store's
 * own deadline, which is what the signal is there to prevent.
 */
import { describe, expect, it } from 'vitest';
import {
  admitStore,
  callStore,
  createAdmission,
  createIdempotency,
  type IdempotencyStore,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('a call signal first read after the time limit', () => {
  it('is already aborted, with the engine error as its reason', async () => {
    let seen: AbortSignal | undefined;
    const late = callStore('acquire', 20, async (context) => {
      await sleep(80);
      seen = context.signal;
      return 1;
    });
    await expect(late).rejects.toBeInstanceOf(StoreUnavailableError);
    await sleep(100);
    expect(seen?.aborted).toBe(true);
    expect(seen?.reason).toBeInstanceOf(StoreUnavailableError);
  });

  it('an acquire that waited in an admission queue past storeTimeoutMs is never sent (it leaves the queue when its signal aborts)', async () => {
    const memory = new FakeStore();
    let release: (() => void) | undefined;
    const seen: AbortSignal[] = [];
    const inner: IdempotencyStore = {
      capabilities: memory.capabilities,
      acquire: (input, call) => {
        if (call) seen.push(call.signal);
        return memory.acquire(input);
      },
      complete: (input) => memory.complete(input),
      release: (input) => memory.release(input),
      extend: (input) => memory.extend(input),
      get: (key) => memory.get(key),
    };
    const admission = createAdmission({
      targetLatencyMs: 1_000,
      initialLimit: 1,
      minLimit: 1,
      maxLimit: 1,
      maxWaitMs: 1_000,
    });
    // The one slot held by other work until well past the engine's time limit.
    void admission.run('essential', () => new Promise<void>((resolve) => (release = resolve)));
    const idem = createIdempotency<string>({
      store: admitStore(inner, admission),
      storeTimeoutMs: 50,
    });
    const call = idem.execute({ key: 'queued', scope: 's' }, async () => 'v');
    await expect(call).rejects.toBeInstanceOf(StoreUnavailableError);
    await sleep(100);
    release?.();
    // Before edge33 the queued acquire reached the store now, long after the engine gave it
    // up (with its signal aborted); it left the queue when that signal aborted instead.
    expect(admission.waiting).toBe(0);
    await sleep(100);
    expect(seen).toEqual([]);
    await idem.drain(2_000);
  });
});
