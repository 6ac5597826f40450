import { expect } from 'vitest';
import { finalOnceStarted, PROBLEM_TYPES } from '../../src/index.js';
import { binaryPayload, SSE_EVENTS } from './behaviours.js';
import { json } from './client.js';
import {
  expectProblem,
  newKey,
  REPLAYED,
  type Scenario,
  TENANT_HEADER,
  waitFor,
} from './scenario-kit.js';

/** What is recorded and replayed, and what is not: failures, streams, tenants, outages, limits. */
export const OUTCOME_SCENARIOS: Scenario[] = [
  {
    name: 'does not record a throw or a 5xx by default: the retry runs again',
    async run({ post, calls }) {
      const key = newKey();
      for (let attempt = 1; attempt <= 2; attempt++) {
        const thrown = await post('/throws', { key, body: {} });
        expect(thrown.status).toBe(500);
        expect(thrown.headers[REPLAYED]).toBeUndefined();
        expect(calls('/throws')).toBe(attempt);
        const failed = await post('/fails', { key: `${key}-5xx`, body: {} });
        expect(failed.status).toBe(502);
        expect(json(failed)).toMatchObject({ attempt });
      }
    },
  },
  {
    name: 'replays a 5xx and a throw once started, with the Stripe-like policy',
    options: { isFinal: finalOnceStarted },
    async run({ post, calls }) {
      const key = newKey();
      const [failed, failedAgain] = [
        await post('/fails', { key, body: {} }),
        await post('/fails', { key, body: {} }),
      ];
      expect(failedAgain.status).toBe(502);
      expect(failedAgain.headers[REPLAYED]).toBe('true');
      expect(failedAgain.body.equals(failed.body)).toBe(true);
      expect(calls('/fails')).toBe(1);
      const thrown = await post('/throws', { key: `${key}-throw`, body: {} });
      const thrownAgain = await post('/throws', { key: `${key}-throw`, body: {} });
      expect([thrown.status, thrownAgain.status]).toEqual([500, 500]);
      expect(thrownAgain.headers[REPLAYED]).toBe('true');
      expect(thrownAgain.body.equals(thrown.body)).toBe(true);
      expect(calls('/throws')).toBe(1);
    },
  },
  {
    name: 'replays a binary body byte for byte',
    async run({ post, calls }) {
      const key = newKey();
      const first = await post('/binary', { key, body: Buffer.from([0, 255, 128]) });
      const again = await post('/binary', { key, body: Buffer.from([0, 255, 128]) });
      expect(first.body.equals(Buffer.from(binaryPayload(1)))).toBe(true);
      expect(again.body.equals(first.body)).toBe(true);
      expect(again.headers['content-type']).toBe('application/octet-stream');
      expect(again.headers[REPLAYED]).toBe('true');
      expect(calls('/binary')).toBe(1);
    },
  },
  {
    name: 'streams SSE live and replays the same bytes in the same chunks',
    async run({ post, calls, spy }) {
      const key = newKey();
      const first = await post('/sse', { key, body: { prompt: 'hi' } });
      const events = first.body.toString('utf8').split('\n\n').filter(Boolean);
      expect(events.map((e) => JSON.parse(e.split('data: ')[1]!).seq)).toEqual([0, 1, 2, 3, 4]);
      const again = await post('/sse', { key, body: { prompt: 'hi' } });
      expect(again.body.equals(first.body)).toBe(true);
      expect(again.headers['content-type']).toBe(first.headers['content-type']);
      expect(again.headers['content-type']).toMatch(/^text\/event-stream/);
      expect(again.headers[REPLAYED]).toBe('true');
      expect(calls('/sse')).toBe(1);
      // What reached the store: one chunk per event, in order.
      expect(spy.completed).toHaveLength(1);
      expect(spy.completed[0]!.meta.chunks).toEqual(
        events.map((e) => Buffer.byteLength(`${e}\n\n`)),
      );
      expect(spy.completed[0]!.meta.chunks).toHaveLength(SSE_EVENTS);
    },
  },
  {
    name: 'still records when the client gives up before the handler ends: the retry gets the replay',
    async run({ post, calls, spy }) {
      const key = newKey();
      await expect(
        post('/charges?delay=300', { key, body: { n: 1 }, timeoutMs: 100 }),
      ).rejects.toThrow(/timed out/);
      await waitFor(
        () => spy.calls.complete + spy.calls.release === 1,
        'the outcome to be settled',
      );
      const retry = await post('/charges?delay=300', { key, body: { n: 1 } });
      expect(retry.status).toBe(201);
      expect(retry.headers[REPLAYED]).toBe('true');
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    name: 'does not replay a stream that broke midway as a success',
    async run({ post, calls, spy }) {
      const key = newKey();
      const first = await post('/broken', { key, body: {} });
      expect(first.complete).toBe(false);
      await waitFor(() => spy.calls.release === 1, 'the key to be released');
      const again = await post('/broken', { key, body: {} });
      expect(again.headers[REPLAYED]).toBeUndefined();
      expect(calls('/broken')).toBe(2);
      expect(spy.calls.complete).toBe(0);
    },
  },
  {
    name: 'keeps the same key of two tenants apart',
    async run({ post, calls }) {
      const key = newKey();
      const a = await post('/charges', {
        key,
        body: { amount: 5 },
        headers: { [TENANT_HEADER]: 'tenant-a' },
      });
      const b = await post('/charges', {
        key,
        body: { amount: 5 },
        headers: { [TENANT_HEADER]: 'tenant-b' },
      });
      const aAgain = await post('/charges', {
        key,
        body: { amount: 5 },
        headers: { [TENANT_HEADER]: 'tenant-a' },
      });
      expect(json(a)).toMatchObject({ charge: 1, tenant: 'tenant-a' });
      expect(json(b)).toMatchObject({ charge: 2, tenant: 'tenant-b' });
      expect(aAgain.headers[REPLAYED]).toBe('true');
      expect(aAgain.body.equals(a.body)).toBe(true);
      expect(calls('/charges')).toBe(2);
    },
  },
  {
    name: 'answers 503 with Retry-After at once when the store is down, without running the handler',
    storeDown: 'failing',
    async run({ post, calls }) {
      const down = await post('/charges', { key: newKey(), body: {}, timeoutMs: 2_000 });
      expectProblem(down, 503, PROBLEM_TYPES.storeUnavailable);
      expect(down.headers['retry-after']).toBe('1');
      expect(calls('/charges')).toBe(0);
    },
  },
  {
    name: 'answers 503 after storeTimeoutMs when the store does not answer',
    storeDown: 'hanging',
    options: { storeTimeoutMs: 150, unavailableRetryAfterSeconds: 3 },
    async run({ post, calls }) {
      const down = await post('/charges', { key: newKey(), body: {}, timeoutMs: 2_000 });
      expectProblem(down, 503, PROBLEM_TYPES.storeUnavailable);
      expect(down.headers['retry-after']).toBe('3');
      expect(calls('/charges')).toBe(0);
    },
  },
  {
    name: 'runs the handler without idempotency when the store is down and failOpen is chosen',
    storeDown: 'failing',
    options: { failOpen: true },
    async run({ post, calls }) {
      expect((await post('/charges', { key: newKey(), body: {}, timeoutMs: 2_000 })).status).toBe(
        201,
      );
      expect(calls('/charges')).toBe(1);
    },
  },
  {
    name: 'never replays Set-Cookie or headers outside the allowlist',
    async run({ post }) {
      const key = newKey();
      const first = await post('/charges', { key, body: {} });
      const again = await post('/charges', { key, body: {} });
      expect(first.headers['set-cookie']).toEqual(['session=s1; Path=/; HttpOnly']);
      expect(first.headers['x-unrecorded']).toBe('n1');
      expect(again.headers[REPLAYED]).toBe('true');
      expect(again.headers['set-cookie']).toBeUndefined();
      expect(again.headers['x-unrecorded']).toBeUndefined();
      expect(again.headers.location).toBe('/charges/1');
    },
  },
  {
    name: 'answers 413 to a body above maxBodyBytes before storing anything',
    options: { maxBodyBytes: 64 },
    async run({ post, calls, spy }) {
      const big = { pad: 'x'.repeat(200) };
      expectProblem(
        await post('/charges', { key: newKey(), body: big }),
        413,
        PROBLEM_TYPES.bodyTooLarge,
      );
      expect(calls('/charges')).toBe(0);
      expect(spy.calls.acquire).toBe(0);
      expect((await post('/charges', { key: newKey(), body: { small: true } })).status).toBe(201);
    },
  },
  {
    name: 'passes methods that need no key through untouched',
    async run({ post, calls, spy }) {
      const get = await post('/charges', { method: 'GET' });
      const again = await post('/charges', { method: 'GET', key: 'ignored' });
      expect([get.status, again.status]).toEqual([201, 201]);
      expect(again.headers[REPLAYED]).toBeUndefined();
      expect(calls('/charges')).toBe(2);
      expect(spy.calls.acquire).toBe(0);
    },
  },
];
