import {
  answersSynchronously,
  createIdempotency,
  type IdemEvent,
  type IdempotencyStore,
  LeaseLostError,
  StoreUnavailableError,
  syncFormOf,
} from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../src/index.js';

type Method<I, R> = (input: I) => Promise<R>;

/** The same method without its synchronous form (called through the promise, timed). */
function promiseOnly<I, R>(method: Method<I, R>): Method<I, R> {
  return (input) => method(input);
}

/** Events without timings, to compare two runs. */
function shapes(events: IdemEvent[]): unknown[] {
  return events.map((event) => {
    const {
      durationMs: _d,
      decodeMs: _m,
      retryAfterMs: _r,
      error,
      ...rest
    } = event as IdemEvent & {
      durationMs?: number;
      decodeMs?: number;
      retryAfterMs?: number;
      error?: unknown;
    };
    return error === undefined ? rest : { ...rest, error: (error as Error)?.name };
  });
}

describe('synchronous store calls: review', () => {
  it('a "synchronous form" that answers a promise (an async function) is awaited, not taken as the answer', async () => {
    const memory = createMemoryStore();
    const acquire = syncFormOf(memory.acquire)!;
    const complete = syncFormOf(memory.complete)!;
    const release = syncFormOf(memory.release)!;
    // TypeScript refuses this store (Promise<Promise<...>>); JavaScript, or a cast, does not.
    const store = {
      ...memory,
      acquire: answersSynchronously(async (input: Parameters<typeof acquire>[0]) => acquire(input)),
      complete: answersSynchronously(async (input: Parameters<typeof complete>[0]) =>
        complete(input),
      ),
      release: answersSynchronously(async (input: Parameters<typeof release>[0]) => release(input)),
    } as unknown as IdempotencyStore;
    const idem = createIdempotency({ store });
    let runs = 0;
    const run = async () => ++runs;
    await expect(idem.execute({ key: 'a' }, run)).resolves.toEqual({ value: 1, replayed: false });
    await expect(idem.execute({ key: 'a' }, run)).resolves.toEqual({ value: 1, replayed: true });
    expect(runs).toBe(1);
    await memory.close();
  });

  it('an async "synchronous form" that never answers still meets the store-call time limit', async () => {
    const memory = createMemoryStore();
    const store = {
      ...memory,
      acquire: answersSynchronously(async () => new Promise<never>(() => {})),
    } as unknown as IdempotencyStore;
    const idem = createIdempotency({ store, storeTimeoutMs: 50 });
    const error = await idem.execute({ key: 'a' }, async () => 1).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    await memory.close();
  });

  for (const scenario of ['lands', 'handler fails', 'lease lost', 'fails once'] as const) {
    it(`events and drain() are the same with and without synchronous forms: ${scenario}`, async () => {
      const runOnce = async (sync: boolean) => {
        const memory = createMemoryStore();
        const complete = syncFormOf(memory.complete)!;
        let fails = scenario === 'fails once' ? 1 : 0;
        const completeSync = (input: Parameters<typeof complete>[0]) => {
          if (scenario === 'lease lost')
            return { ok: false as const, reason: 'not_owner' as const };
          if (fails-- > 0) throw new Error('connection reset (injected)');
          return complete(input);
        };
        const withSync = answersSynchronously(completeSync);
        const store: IdempotencyStore = {
          ...memory,
          acquire: sync ? memory.acquire : promiseOnly(memory.acquire),
          release: sync ? memory.release : promiseOnly(memory.release),
          complete: sync ? withSync : promiseOnly(withSync),
        };
        const events: IdemEvent[] = [];
        const idem = createIdempotency({
          store,
          leaseMs: 1_000,
          onEvent: (event) => events.push(event),
        });
        const outcome = await idem
          .execute({ key: 'k' }, async () => {
            if (scenario === 'handler fails') throw new Error('boom');
            return 'v';
          })
          .then(
            (value) => ({ value }),
            (error: unknown) => ({ error: (error as Error).name }),
          );
        const drained = await idem.drain(1_000);
        const again = await idem
          .execute({ key: 'k' }, async () => 'w')
          .then(
            (value) => ({ value }),
            (error: unknown) => ({ error: (error as Error).name }),
          );
        await memory.close();
        return { outcome, drained, again, events: shapes(events) };
      };
      const viaSync = await runOnce(true);
      const viaPromise = await runOnce(false);
      expect(viaSync).toEqual(viaPromise);
      if (scenario === 'lease lost')
        expect(viaSync.outcome).toEqual({ error: LeaseLostError.name });
    });
  }
});
