import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { PROBLEM } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono, type MiddlewareHandler } from 'hono';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import {
  keyOf,
  memoryOptions,
  poster,
  settled,
  slowCharges,
  TRANSPORTS,
} from './rev33b-support.js';

// rev33b: two apps sharing one store (one behind a timeout, one not), and idempotency() nested
// with the timeout between the two instances: one run for one key, whichever app is retried.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

const headerAfter: MiddlewareHandler = async (c, next) => {
  await next();
  c.header('x-inner', '1');
};

describe('rev33b hono: two apps, one store; nested instances around the timeout', () => {
  for (const transport of TRANSPORTS) {
    it(`${transport}, overtaken in app A (timeout), retried on app B (none): 409, then the marker; one run`, async () => {
      const store = createMemoryStore();
      let runs = 0;
      const route = async (c: import('hono').Context) => {
        runs += 1;
        await sleep(300);
        return c.json({ runs }, 201);
      };
      const a = new Hono();
      a.use(timeout(100));
      a.use(idempotency(memoryOptions({ store })));
      a.use(headerAfter);
      a.post('/charges', route);
      const b = new Hono();
      b.use(idempotency(memoryOptions({ store })));
      b.post('/charges', route);
      const postA = await poster(transport, a, servers);
      const postB = await poster(transport, b, servers);
      const key = keyOf('two-apps');
      expect((await postA(key)).status).toBe(504);
      expect((await postB(key)).status).toBe(409);
      const last = await settled(postB, key);
      expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect((await postA(key)).status).toBe(500);
      expect(runs).toBe(1);
    });

    it(`${transport}, idempotency() / timeout / idempotency() / route: one run, retries never run it again`, async () => {
      const counts = { runs: 0 };
      const app = new Hono();
      app.use(idempotency(memoryOptions()));
      app.use(timeout(100));
      app.use(idempotency(memoryOptions()));
      app.use(headerAfter);
      slowCharges(app, counts);
      const post = await poster(transport, app, servers);
      const key = keyOf('nested-around');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      expect(last.status).not.toBe(201);
      await sleep(400);
      for (let i = 0; i < 3; i += 1) expect((await post(key)).status).not.toBe(201);
      expect(counts.runs).toBe(1);
    });

    it(`${transport}, timeout / idempotency() / idempotency() / route: both hold, then the marker; one run`, async () => {
      const counts = { runs: 0 };
      const app = new Hono();
      app.use(timeout(100));
      app.use(idempotency(memoryOptions()));
      app.use(idempotency(memoryOptions()));
      app.use(headerAfter);
      slowCharges(app, counts);
      const post = await poster(transport, app, servers);
      const key = keyOf('nested-inside');
      expect((await post(key)).status).toBe(504);
      expect((await post(key)).status).toBe(409);
      const last = await settled(post, key);
      expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect(counts.runs).toBe(1);
    });
  }
});
