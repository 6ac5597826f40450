import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { leftBeforeHeadProbe, memoryStores, redisStores } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express, { type Request, type Response } from 'express';
import { afterAll, describe, it } from 'vitest';
import { type ExpressIdempotencyOptions, idempotency } from '../src/index.js';

// leftearly30 FINDING (HIGH, exactly-once; fixed in @idem/http's recorder): a client that left
// before the head (its own timeout while the route still works: a slow payment or LLM call
// longer than the lease) had its response watched for silence as a body that had stopped: after
// a lease without output the heartbeats stopped, the lease lapsed, and a retry ran the route a
// second time beside the first (409, 409, 409, 201). A response whose head has not started is a
// handler still working: its lease is renewed as for a client that stays (up to maxHoldMs).

const LEASE = 300;
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

async function start(store: ExpressIdempotencyOptions['store'], h2 = false) {
  const probe = leftBeforeHeadProbe(LEASE);
  const options = { store, scope: 'global' as const, leaseMs: LEASE };
  const app = express();
  app.use(express.json());
  app.use(idempotency(options));
  app.post('/jobs', async (_req, res) => {
    const run = await probe.work();
    res.status(201).json({ run });
  });
  // Express does not serve node:http2 itself: the middleware on a node:http2 response (h2c),
  // bridged as in express-http2.test.ts, then the route.
  const middleware = idempotency(options);
  const server = h2
    ? http2.createServer((req, res) => {
        Object.assign(req, { originalUrl: req.url });
        Object.assign(res, { locals: {} });
        void middleware(req as unknown as Request, res as unknown as Response, async () => {
          const run = await probe.work();
          res.writeHead(201, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ run }));
        });
      })
    : app.listen(0, '127.0.0.1');
  if (h2) server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return { probe, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('leftearly30 express: the client leaves before the head while the route still works', () => {
  for (const kind of [memoryStores(), redisStores()]) {
    it(`${kind.name} store: retries past two leases get 409, then the replay; the route ran once`, async () => {
      const stores = await kind.setup();
      closers.push(stores.close);
      const { probe, url } = await start(stores.create());
      await probe.check(url, '/jobs');
    });
  }

  it('HTTP/2: a stream reset before the head, the same', async () => {
    const { probe, url } = await start(createMemoryStore(), true);
    await probe.check(url, '/jobs', { http2: true });
  });
});
