/**
 * `failOpen` and an acquisition answered too late in its lease (core refuses it with
 * `LeaseLostError` and gives it back once the store answers it). The rev3 review withdrew a
 * refusal with `StoreUnavailableError`: with `failOpen: true` the handler then ran
 * unprotected, beside a competitor that took the key over once the late acquisition's lease
 * passed. Now: 503 whatever `failOpen` says, the handler does not run, the competitor runs
 * once, and a retry is not held off with 409 by the late acquisition.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { withIdempotency } from '../src/index.js';
import { post } from './web-requests.js';

/** `inner`, whose next acquire is applied `applyAfterMs` after its send and answered `answerAfterMs` after that. */
function lateAcquire(inner: IdempotencyStore, applyAfterMs: number, answerAfterMs: number) {
  let armed = true;
  const store: IdempotencyStore = {
    capabilities: inner.capabilities,
    acquire: async (input) => {
      const late = armed;
      armed = false;
      if (late) await sleep(applyAfterMs);
      const result = await inner.acquire(input);
      if (late) await sleep(answerAfterMs);
      return result;
    },
    complete: (input) => inner.complete(input),
    release: (input) => inner.release(input),
    extend: (input) => inner.extend(input),
    get: (key) => inner.get(key),
  };
  return store;
}

describe('an acquisition answered after its lease passed, over HTTP', () => {
  for (const failOpen of [true, false]) {
    for (const heartbeatMs of [100, false] as const) {
      const settings = {
        scope: 'global' as const,
        leaseMs: 300,
        heartbeatMs,
        storeTimeoutMs: 2_000,
        failOpen,
        onWarning: () => {},
      };

      it(`503, the handler not run; a competitor that takes the key runs once (failOpen ${failOpen}, heartbeatMs ${heartbeatMs})`, async () => {
        const memory = createMemoryStore();
        const runs: string[] = [];
        const late = withIdempotency(
          async () => {
            runs.push('late');
            await sleep(300);
            return new Response('late');
          },
          { ...settings, store: lateAcquire(memory, 0, 500) },
        );
        const competitor = withIdempotency(
          async () => {
            runs.push('competitor');
            await sleep(300);
            return new Response('competitor');
          },
          { ...settings, store: memory },
        );
        const first = late(post('k'));
        // The late acquisition's lease passed in the store; its answer comes at 500 ms.
        await sleep(400);
        const second = await competitor(post('k'));
        expect(second.status).toBe(200);
        expect(await second.text()).toBe('competitor');
        const refused = await first;
        expect(refused.status).toBe(503);
        expect(refused.headers.get('retry-after')).toBe('1');
        await sleep(200); // the late answer came, and its give-back (not the competitor's record)
        const replay = await late(post('k'));
        expect(replay.status).toBe(200);
        expect(await replay.text()).toBe('competitor');
        expect(runs).toEqual(['competitor']);
      });

      it(`given back once answered: a retry right after runs, not 409 (failOpen ${failOpen}, heartbeatMs ${heartbeatMs})`, async () => {
        const memory = createMemoryStore();
        const runs: string[] = [];
        const handler = async () => {
          runs.push('run');
          return new Response('done');
        };
        const late = withIdempotency(handler, {
          ...settings,
          store: lateAcquire(memory, 350, 50),
        });
        const refused = await late(post('k'));
        expect(refused.status).toBe(503);
        expect(runs).toEqual([]);
        // Held by the store from 350 ms (a lease to 650 ms), answered and given back at 400 ms.
        await sleep(200);
        const retry = await late(post('k'));
        expect(retry.status).toBe(200);
        expect(runs).toEqual(['run']);
      });
    }
  }
});
