import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { expectReplayOf, newKey, REPLAYED, type Scenario, waitFor } from '../kit.js';
import { SSE_EVENTS } from '../routes.js';

const group = 'disconnects';

/** A client that goes away never causes a second execution. */
export const DISCONNECT_SCENARIOS: Scenario[] = [
  {
    group,
    name: 'still records when the client gives up before the handler answers: the retry gets the replay',
    async run({ post, calls, spy }) {
      const key = newKey();
      await expect(
        post('/charges?delay=300', { key, body: { n: 1 }, timeoutMs: 100 }),
      ).rejects.toThrow(/timed out/);
      await waitFor(
        () => spy.completed.length + spy.calls.release >= 1,
        'the outcome to be settled',
      );
      expect(spy.calls.release, 'the key was released: a retry would run again').toBe(0);
      const retry = await post('/charges?delay=300', { key, body: { n: 1 } });
      expect(retry.status).toBe(201);
      expect(retry.headers[REPLAYED]).toBe('true');
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    group,
    name: 'drains and records a stream whose client went away after its first chunk: the retry replays it whole',
    async run({ post, calls, spy }) {
      const key = newKey();
      const left = await post('/sse?gap=60', { key, body: { prompt: 'hi' }, leaveAfterBytes: 1 });
      expect(left.complete).toBe(false);
      expect(left.body.length).toBeGreaterThan(0);
      await waitFor(
        () => spy.completed.length + spy.calls.release >= 1,
        'the stream to be settled without its client',
      );
      expect(spy.calls.release, 'the key was released: a retry would run again').toBe(0);
      expect(spy.completed).toHaveLength(1);
      expect(spy.completed[0]!.meta.chunks).toHaveLength(SSE_EVENTS);
      const retry = await post('/sse?gap=60', { key, body: { prompt: 'hi' } });
      expect(retry.headers[REPLAYED]).toBe('true');
      expect(retry.body.toString('utf8').startsWith(left.body.toString('utf8'))).toBe(true);
      expect(retry.body.toString('utf8').split('\n\n').filter(Boolean)).toHaveLength(SSE_EVENTS);
      expect(calls('/sse')).toBe(1);
    },
  },
  {
    group,
    name: 'drains and records a binary stream whose client went away midway',
    async run({ post, calls, spy }) {
      const key = newKey();
      const path = '/stream?chunks=6&size=512&gap=40';
      const left = await post(path, { key, body: {}, leaveAfterBytes: 512 });
      expect(left.complete).toBe(false);
      await waitFor(
        () => spy.completed.length + spy.calls.release >= 1,
        'the stream to be settled without its client',
      );
      expect(spy.calls.release, 'the key was released: a retry would run again').toBe(0);
      const retry = await post(path, { key, body: {} });
      expect(retry.body.length).toBe(6 * 512);
      expect(retry.body.subarray(0, left.body.length).equals(left.body)).toBe(true);
      expectReplayOf(await post(path, { key, body: {} }), retry);
      expect(calls('/stream')).toBe(1);
    },
  },
  {
    group,
    name: 'survives a client that left mid-stream while the final write fails: no crash, no release, the retry replays once the store answers',
    options: { storeTimeoutMs: 100, completionWaitMs: 100 },
    faults: { failComplete: true },
    async run({ post, calls, spy }) {
      const unhandled: unknown[] = [];
      const listener = (reason: unknown) => unhandled.push(reason);
      process.on('unhandledRejection', listener);
      try {
        const key = newKey();
        const path = '/stream?chunks=4&size=64&gap=30';
        const left = await post(path, { key, body: {}, leaveAfterBytes: 64 });
        expect(left.complete).toBe(false);
        // The body is drained without its client; its final write fails past completionWaitMs.
        await waitFor(() => spy.calls.complete >= 3, 'the final write to fail and be retried');
        await sleep(150);
        spy.faults.failComplete = false;
        await waitFor(() => spy.completed.length === 1, 'the retried final write to land');
        // The store's calls are bounded by 100 ms here: on a loaded machine the retry's read
        // may miss that bound (503, nothing run); a client retries such an answer.
        let retry = await post(path, { key, body: {} });
        for (let i = 0; i < 20 && retry.status === 503; i++) {
          await sleep(100);
          retry = await post(path, { key, body: {} });
        }
        expect(retry.headers[REPLAYED]).toBe('true');
        expect(retry.body.subarray(0, left.body.length).equals(left.body)).toBe(true);
        expect(calls('/stream')).toBe(1);
        expect(spy.calls.release, 'the key was released: a retry would run again').toBe(0);
      } finally {
        process.off('unhandledRejection', listener);
      }
      expect(unhandled, 'unhandled rejections (each one crashes a server process)').toEqual([]);
    },
  },
  {
    group,
    name: 'stops reading an endless stream whose client left once the lease is lost (maxHoldMs), instead of forever',
    options: { leaseMs: 200, heartbeatMs: 50, maxHoldMs: 400 },
    async run({ post, calls }) {
      const left = await post('/endless?gap=20', { key: newKey(), body: {}, leaveAfterBytes: 1 });
      expect(left.complete).toBe(false);
      // Production goes on while the lease holds, and must stop within a few leases of
      // maxHoldMs: no new chunk over two polls in a row.
      let produced = -1;
      let quiet = 0;
      await waitFor(
        () => {
          const now = calls('/endless:chunks');
          quiet = now === produced ? quiet + 1 : 0;
          produced = now;
          return quiet >= 2;
        },
        'the endless body to be cancelled',
        5_000,
        250,
      );
      expect(calls('/endless')).toBe(1);
    },
  },
];
