import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import type { Exchange } from '../client.js';
import { expectProblem, expectReplayOf, newKey, PROBLEM, REPLAYED, type Scenario } from '../kit.js';
import { startLiveStream } from './live-stream.js';

const finalOnceStarted = () => true;

/** A handler that fails after the key was acquired never leaves the key held. */
export const AFTER_ACQUISITION_SCENARIOS: Scenario[] = [
  {
    group: 'throws after acquisition',
    name: 'releases the key of a handler that threw at once: the retry runs (no 409) and no heartbeat renews it',
    options: { leaseMs: 600, heartbeatMs: 50 },
    async run({ post, calls, spy }) {
      const key = newKey();
      expect((await post('/throws', { key, body: {} })).status).toBe(500);
      const renewals = spy.calls.extend;
      await sleep(250);
      expect(spy.calls.extend, 'heartbeats after the execution ended').toBe(renewals);
      const retry = await post('/throws', { key, body: {} });
      expect(retry.status).toBe(500);
      expect(calls('/throws')).toBe(2);
      expect(spy.calls.release).toBe(2);
    },
  },
  {
    group: 'throws after acquisition',
    name: 'does not replay a stream that broke midway as a success: released, the retry runs again',
    async run({ post, calls, spy }) {
      const key = newKey();
      const first = await post('/broken', { key, body: {} });
      expect(first.complete).toBe(false);
      const again = await post('/broken', { key, body: {} });
      expect(again.status).not.toBe(409);
      expect(again.headers[REPLAYED]).toBeUndefined();
      expect(calls('/broken')).toBe(2);
      expect(spy.calls.complete).toBe(0);
    },
  },
  {
    group: 'throws after acquisition',
    name: 'breaks the copy a duplicate attached to when the live stream breaks: no clean end, nothing recorded, the retry runs again',
    async run(ctx) {
      const key = newKey();
      // The duplicate must attach before the break (event 3): 1.8 s after the first event
      // leaves a loaded machine (CI's lanes) room; at 250 ms a late duplicate found the key
      // released and ran again.
      const path = '/sse?gap=600&fail=3';
      const first = await startLiveStream(ctx, key, path);
      try {
        const attached = await ctx.post(path, { key, body: {} });
        expect(attached.status).toBe(200);
        expect(attached.complete, 'the attached copy of a broken stream ended cleanly').toBe(false);
        expect((await first.done).complete).toBe(false);
        const retry = await ctx.post(path, { key, body: {} });
        expect(retry.headers[REPLAYED]).toBeUndefined();
        expect(ctx.calls('/sse')).toBe(2);
        expect(ctx.spy.calls.complete).toBe(0);
      } finally {
        await first.settled;
      }
    },
  },
  {
    group: 'throws after acquisition',
    name: 'does not record a broken stream even when every started response is final',
    options: { isFinal: finalOnceStarted },
    async run({ post, calls, spy }) {
      const key = newKey();
      expect((await post('/broken', { key, body: {} })).complete).toBe(false);
      expect((await post('/broken', { key, body: {} })).headers[REPLAYED]).toBeUndefined();
      expect(calls('/broken')).toBe(2);
      expect(spy.calls.complete).toBe(0);
    },
  },
];

const faults = 'store faults';

/** Sends, and gives `undefined` when the connection broke before any response. */
async function attempt(post: Promise<Exchange>): Promise<Exchange | undefined> {
  try {
    return await post;
  } catch {
    return undefined;
  }
}

/** The store down, hanging, slow, or failing at the final write. */
export const STORE_FAULT_SCENARIOS: Scenario[] = [
  {
    group: faults,
    name: 'answers 503 with Retry-After at once when the store is down, without running the handler',
    storeDown: 'failing',
    async run({ post, calls }) {
      const down = await post('/charges', { key: newKey(), body: {}, timeoutMs: 2_000 });
      expectProblem(down, 503, PROBLEM.storeUnavailable);
      expect(down.headers['retry-after']).toBe('1');
      expect(calls('/charges')).toBe(0);
    },
  },
  {
    group: faults,
    name: 'answers 503 after storeTimeoutMs when the store does not answer',
    storeDown: 'hanging',
    options: { storeTimeoutMs: 150, unavailableRetryAfterSeconds: 3 },
    async run({ post, calls }) {
      const down = await post('/charges', { key: newKey(), body: {}, timeoutMs: 2_000 });
      expectProblem(down, 503, PROBLEM.storeUnavailable);
      expect(down.headers['retry-after']).toBe('3');
      expect(calls('/charges')).toBe(0);
    },
  },
  {
    group: faults,
    name: 'runs the handler without idempotency when the store is down and failOpen is chosen',
    storeDown: 'failing',
    options: { failOpen: true },
    async run({ post, calls }) {
      const open = await post('/charges', { key: newKey(), body: {}, timeoutMs: 2_000 });
      expect(open.status).toBe(201);
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    group: faults,
    name: 'keeps exactly once on a slow store (every call 40 ms)',
    faults: { callDelayMs: 40 },
    async run({ post, calls }) {
      const key = newKey();
      const [a, b] = await Promise.all([
        post('/charges?delay=100', { key, body: { n: 1 } }),
        post('/charges?delay=100', { key, body: { n: 1 } }),
      ]);
      expect([a.status, b.status].sort()).toEqual([201, 409]);
      const first = a.status === 201 ? a : b;
      expectReplayOf(await post('/charges?delay=100', { key, body: { n: 1 } }), first);
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    group: faults,
    name: 'aborts a response whose outcome could not be stored (never a clean end) and keeps the key',
    faults: { failComplete: true },
    options: { completionWaitMs: 100, maxHoldMs: 3_000 },
    async run({ post, calls }) {
      for (const path of ['/charges', '/sse']) {
        const key = newKey();
        const first = await attempt(post(path, { key, body: {} }));
        expect(first?.complete ?? false, `${path}: a response ended as if recorded`).toBe(false);
        // The final write is retried in the background: the key is held, never run again.
        const retry = await post(path, { key, body: {} });
        expectProblem(retry, 409, PROBLEM.inProgress);
        expect(calls(path)).toBe(1);
      }
    },
  },
];
