import { expect } from 'vitest';
import { PROBLEM_TYPES } from '../../src/index.js';
import { expectProblem, newKey, REPLAYED, type Scenario, startSlowCharge } from './scenario-kit.js';

/** The order of checks: key, 409/422, 400, and when the outcome is stored. */
export const PROTOCOL_SCENARIOS: Scenario[] = [
  {
    name: 'runs concurrent identical requests once; waiting callers get the replay',
    options: { wait: { timeoutMs: 5_000, pollMs: 20 } },
    async run({ post, calls }) {
      const key = newKey();
      const all = await Promise.all(
        Array.from({ length: 6 }, () => post('/charges?delay=200', { key, body: { amount: 100 } })),
      );
      expect(calls('/charges')).toBe(1);
      for (const exchange of all) {
        expect(exchange.status).toBe(201);
        expect(exchange.body.equals(all[0]!.body)).toBe(true);
      }
      expect(all.filter((e) => e.headers[REPLAYED] === 'true')).toHaveLength(5);
    },
  },
  {
    name: 'runs concurrent identical requests once; without wait the others get 409',
    async run({ post, calls }) {
      const key = newKey();
      const all = await Promise.all(
        Array.from({ length: 6 }, () => post('/charges?delay=300', { key, body: { amount: 100 } })),
      );
      expect(calls('/charges')).toBe(1);
      expect(all.map((e) => e.status).sort()).toEqual([201, 409, 409, 409, 409, 409]);
      for (const conflict of all.filter((e) => e.status === 409)) {
        expectProblem(conflict, 409, PROBLEM_TYPES.inProgress);
        expect(conflict.headers['retry-after']).toBe('1');
      }
    },
  },
  {
    name: 'answers 409 with Retry-After while the first request runs, then replays',
    async run(ctx) {
      const { post, calls } = ctx;
      const key = newKey();
      const first = await startSlowCharge(ctx, key);
      const second = await post('/charges?delay=300', { key, body: { amount: 1 } });
      expectProblem(second, 409, PROBLEM_TYPES.inProgress);
      expect(second.headers['retry-after']).toBe('1');
      const original = await first.done;
      const replay = await post('/charges?delay=300', { key, body: { amount: 1 } });
      expect(original.status).toBe(201);
      expect(original.headers[REPLAYED]).toBeUndefined();
      expect(replay.status).toBe(201);
      expect(replay.headers[REPLAYED]).toBe('true');
      expect(replay.body.equals(original.body)).toBe(true);
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    name: 'answers 422 to the same key with another body, before 409, without running the handler',
    async run(ctx) {
      const { post, calls } = ctx;
      const key = newKey();
      const first = await startSlowCharge(ctx, key);
      expectProblem(
        await post('/charges?delay=300', { key, body: { amount: 2 } }),
        422,
        PROBLEM_TYPES.keyReused,
      );
      expect((await first.done).status).toBe(201);
      expectProblem(
        await post('/charges?delay=300', { key, body: { amount: 2 } }),
        422,
        PROBLEM_TYPES.keyReused,
      );
      // Same JSON, other key order and spacing: the same request, so a replay.
      const same = await post('/charges?delay=300', {
        key,
        body: Buffer.from('{ "amount" : 1 }'),
        headers: { 'content-type': 'application/json' },
      });
      expect(same.headers[REPLAYED]).toBe('true');
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    name: 'answers 400 to missing, empty, too long, non-ASCII and badly quoted keys, storing nothing',
    async run({ post, calls, spy }) {
      expectProblem(await post('/charges', { body: { a: 1 } }), 400, PROBLEM_TYPES.missingKey);
      for (const bad of [
        '',
        '""',
        'x'.repeat(256),
        'cl\u00e9',
        '"abc',
        '"a\\x"',
        '"ab"c',
        'a"b',
        '"tab\there"',
        'one, two',
      ]) {
        expectProblem(
          await post('/charges', { key: bad, body: { a: 1 } }),
          400,
          PROBLEM_TYPES.invalidKey,
        );
      }
      expect(calls('/charges')).toBe(0);
      expect(spy.calls.acquire).toBe(0);
      // The quoted and the bare form of one key are the same key; escapes are undone.
      expect((await post('/charges', { key: '"order-7"', body: { a: 1 } })).status).toBe(201);
      expect((await post('/charges', { key: 'order-7', body: { a: 1 } })).headers[REPLAYED]).toBe(
        'true',
      );
      expect((await post('/charges', { key: '"a\\"b\\\\c"', body: { a: 1 } })).status).toBe(201);
      expect((await post('/charges', { key: 'x'.repeat(255), body: { a: 1 } })).status).toBe(201);
      expect(calls('/charges')).toBe(3);
    },
  },
  {
    name: 'stores the outcome before the end of the response reaches the client',
    completeDelayMs: 150,
    async run({ post, spy }) {
      // Each exchange resolves on the client's 'end': by then the (slow) write must be done.
      await post('/charges', { key: newKey(), body: {} });
      expect(spy.completed).toHaveLength(1);
      await post('/sse', { key: newKey(), body: {} });
      expect(spy.completed).toHaveLength(2);
      await post('/binary', { key: newKey(), body: {} });
      expect(spy.completed).toHaveLength(3);
    },
  },
];
