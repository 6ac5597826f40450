import { expect } from 'vitest';
import {
  expectProblem,
  expectReplayOf,
  newKey,
  PROBLEM,
  REPLAYED,
  type Scenario,
  startSlowCharge,
} from '../kit.js';
import { startLiveStream } from './live-stream.js';

const group = 'protocol';
const DEPTH = 30_000;
const deep = (inner: string) => Buffer.from(`${'['.repeat(DEPTH)}${inner}${']'.repeat(DEPTH)}`);

/** The order of checks (409/422), concurrency, when the outcome is stored, deep bodies. */
export const PROTOCOL_SCENARIOS: Scenario[] = [
  {
    group,
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
    group,
    name: 'runs concurrent identical requests once; without wait the others get 409',
    async run({ post, calls }) {
      const key = newKey();
      const all = await Promise.all(
        Array.from({ length: 6 }, () =>
          post('/charges?delay=1000', { key, body: { amount: 100 } }),
        ),
      );
      expect(calls('/charges')).toBe(1);
      const firsts = all.filter((e) => e.status === 201 && e.headers[REPLAYED] === undefined);
      expect(firsts, 'one execution answered as such').toHaveLength(1);
      const conflicts = all.filter((e) => e.status === 409);
      expect(conflicts.length, 'duplicates in flight get 409').toBeGreaterThan(0);
      for (const conflict of conflicts) {
        expectProblem(conflict, 409, PROBLEM.inProgress);
        expect(conflict.headers['retry-after']).toBe('1');
      }
      // A request that a loaded machine delivers only after the first one finished is a
      // replay of it, never a second run.
      for (const late of all.filter((e) => e !== firsts[0] && e.status !== 409)) {
        expectReplayOf(late, firsts[0]!);
      }
    },
  },
  {
    group,
    name: 'answers 409 with Retry-After while the first request runs, then replays',
    async run(ctx) {
      const { post, calls } = ctx;
      const key = newKey();
      const first = await startSlowCharge(ctx, key);
      const second = await post('/charges?delay=300', { key, body: { amount: 1 } });
      expectProblem(second, 409, PROBLEM.inProgress);
      expect(second.headers['retry-after']).toBe('1');
      const original = await first.done;
      expect(original.status).toBe(201);
      expect(original.headers[REPLAYED]).toBeUndefined();
      expectReplayOf(await post('/charges?delay=300', { key, body: { amount: 1 } }), original);
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    group,
    name: 'answers 422 to the same key with another body, before 409, without running the handler',
    async run(ctx) {
      const { post, calls } = ctx;
      const key = newKey();
      const first = await startSlowCharge(ctx, key);
      expectProblem(
        await post('/charges?delay=300', { key, body: { amount: 2 } }),
        422,
        PROBLEM.keyReused,
      );
      expect((await first.done).status).toBe(201);
      expectProblem(
        await post('/charges?delay=300', { key, body: { amount: 2 } }),
        422,
        PROBLEM.keyReused,
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
    group,
    name: 'stores the outcome before the end of the response reaches the client',
    faults: { completeDelayMs: 150 },
    async run({ post, spy }) {
      // Each exchange resolves on the client's 'end': by then the (slow) write must be done.
      await post('/charges', { key: newKey(), body: {} });
      expect(spy.completed).toHaveLength(1);
      await post('/sse', { key: newKey(), body: {} });
      expect(spy.completed).toHaveLength(2);
      await post('/binary', { key: newKey(), body: {} });
      expect(spy.completed).toHaveLength(3);
      await post('/empty', { key: newKey(), body: {} });
      expect(spy.completed, 'an answer without a body').toHaveLength(4);
    },
  },
  {
    group,
    name: 'passes methods that need no key through untouched',
    async run({ post, calls, spy }) {
      // GET, and the methods a key is not required of by default (POST and PATCH are).
      let runs = 0;
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const bare = await post('/charges', { method });
        const again = await post('/charges', { method, key: 'ignored' });
        expect([bare.status, again.status], method).toEqual([201, 201]);
        expect(again.headers[REPLAYED]).toBeUndefined();
        runs += 2;
        expect(calls('/charges')).toBe(runs);
      }
      expect(spy.calls.acquire).toBe(0);
    },
  },
  {
    group,
    name: 'requires a key of a PATCH as of a POST: 400 without one, runs once and replays with one',
    async run({ post, calls, spy }) {
      const body = { amount: 1 };
      expectProblem(await post('/charges', { method: 'PATCH', body }), 400, PROBLEM.missingKey);
      expect(calls('/charges')).toBe(0);
      expect(spy.calls.acquire).toBe(0);
      const key = newKey();
      const first = await post('/charges', { method: 'PATCH', key, body });
      expect(first.status).toBe(201);
      expectReplayOf(await post('/charges', { method: 'PATCH', key, body }), first);
      // A POST without a body is keyed too: one run, then its replay.
      const empty = { key: newKey(), headers: { 'content-length': '0' } };
      const bare = await post('/charges', empty);
      expect(bare.status).toBe(201);
      expectReplayOf(await post('/charges', empty), bare);
      expect(calls('/charges')).toBe(2);
    },
  },
  {
    group,
    name: 'attaches a duplicate that arrives while the first answer streams (SSE): the same bytes, one run, no 409',
    async run(ctx) {
      const key = newKey();
      const path = '/sse?gap=250';
      const first = await startLiveStream(ctx, key, path);
      try {
        const attached = await ctx.post(path, { key, body: {} });
        const original = await first.done;
        expect(attached.status, 'a duplicate of a live stream (409: not attached)').toBe(200);
        expect(attached.headers['content-type']).toBe(original.headers['content-type']);
        expect(attached.body.equals(original.body)).toBe(true);
        expect(ctx.calls('/sse')).toBe(1);
      } finally {
        await first.settled;
      }
    },
  },
  {
    group,
    name: `takes a JSON body nested ${DEPTH} deep: runs once, replays, 422 for another (no crash)`,
    async run({ post, calls }) {
      const key = newKey();
      const json = { 'content-type': 'application/json' };
      const first = await post('/accept', { key, body: deep('1'), headers: json });
      expect(first.status).toBe(202);
      expectReplayOf(await post('/accept', { key, body: deep('1'), headers: json }), first);
      expectProblem(
        await post('/accept', { key, body: deep('2'), headers: json }),
        422,
        PROBLEM.keyReused,
      );
      expect(calls('/accept')).toBe(1);
    },
  },
];
