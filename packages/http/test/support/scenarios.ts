import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finalOnceStarted, type HttpIdempotencyOptions, PROBLEM_TYPES } from '../../src/index.js';
import { type Behaviour, binaryPayload, createBehaviours, SSE_EVENTS } from './behaviours.js';
import { type Exchange, json, type SendOptions, send } from './client.js';
import { downStore, type SpiedStore, STORE_KINDS, spyStore } from './stores.js';

/** Header the drivers map to the scope's principal. */
export const TENANT_HEADER = 'x-tenant';

/** What a driver gets to build its app: adapter options (all but the hooks) and the routes. */
export interface ScenarioAppConfig {
  options: Omit<HttpIdempotencyOptions<never>, 'scope' | 'fingerprint'>;
  /** Path -> behaviour; drivers serve each path for every method. */
  routes: Map<string, Behaviour>;
}

/** Starts one framework's app on loopback with the idempotency layer mounted. */
export interface FrameworkDriver {
  name: string;
  start(config: ScenarioAppConfig): Promise<{ url: string; close(): Promise<void> }>;
}

interface ScenarioContext {
  post(path: string, options?: SendOptions): Promise<Exchange>;
  calls(path: string): number;
  spy: SpiedStore;
}

interface Scenario {
  name: string;
  options?: Partial<ScenarioAppConfig['options']>;
  /** Delay every `complete` of the store by this many ms. */
  completeDelayMs?: number;
  /** Replace the store by one whose calls fail at once, or never answer. */
  storeDown?: 'failing' | 'hanging';
  run(ctx: ScenarioContext): Promise<void>;
}

const REPLAYED = 'idempotent-replayed';

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function expectProblem(exchange: Exchange, status: number, type: string): void {
  expect(exchange.status).toBe(status);
  expect(exchange.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(json(exchange)).toMatchObject({ type, status });
}

const newKey = () => `key-${randomUUID()}`;

const SCENARIOS: Scenario[] = [
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
    name: 'answers 409 with Retry-After while the first request runs, then replays',
    async run({ post, calls }) {
      const key = newKey();
      const first = post('/charges?delay=300', { key, body: { amount: 1 } });
      await waitFor(() => calls('/charges') === 1, 'the first request to start');
      const second = await post('/charges?delay=300', { key, body: { amount: 1 } });
      expectProblem(second, 409, PROBLEM_TYPES.inProgress);
      expect(second.headers['retry-after']).toBe('1');
      const original = await first;
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
    async run({ post, calls }) {
      const key = newKey();
      const first = post('/charges?delay=300', { key, body: { amount: 1 } });
      await waitFor(() => calls('/charges') === 1, 'the first request to start');
      expectProblem(
        await post('/charges?delay=300', { key, body: { amount: 2 } }),
        422,
        PROBLEM_TYPES.keyReused,
      );
      expect((await first).status).toBe(201);
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

/**
 * The HTTP acceptance table, run over a real server of `driver` on loopback, once per
 * store kind (memory, real Redis). Each scenario gets a fresh app, store and key prefix.
 */
export function describeHttpScenarios(driver: FrameworkDriver): void {
  describe.each(STORE_KINDS)(`${driver.name} on the $name store`, (kind) => {
    let stores: Awaited<ReturnType<typeof kind.setup>>;
    beforeAll(async () => {
      stores = await kind.setup();
    });
    afterAll(async () => {
      await stores?.close();
    });

    it.each(SCENARIOS)('$name', async (scenario) => {
      const spy = spyStore(scenario.storeDown ? downStore(scenario.storeDown) : stores.create(), {
        completeDelayMs: scenario.completeDelayMs,
      });
      const behaviours = createBehaviours();
      const app = await driver.start({
        options: { store: spy.store, onWarning: () => {}, ...scenario.options },
        routes: behaviours.routes,
      });
      try {
        await scenario.run({
          post: (path, options) => send(app.url, path, options),
          calls: behaviours.calls,
          spy,
        });
      } finally {
        await app.close();
      }
    });
  });
}
