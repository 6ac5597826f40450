import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { describeLeftBeforeHead } from '@idem/http-conformance';
import express, { type Request, type Response } from 'express';
import { idempotency } from '../src/index.js';

// leftearly30 FINDING (HIGH, exactly-once; fixed in @idem/http's recorder): a client that left
// before the head (its own timeout while the route still works: a slow payment or LLM call
// longer than the lease) had its response watched for silence as a body that had stopped: after
// a lease without output the heartbeats stopped, the lease lapsed, and a retry ran the route a
// second time beside the first (409, 409, 409, 201). A response whose head has not started is a
// handler still working: its lease is renewed as for a client that stays (up to maxHoldMs).

const LEASE = 300;

describeLeftBeforeHead(
  'leftearly30 express: the client leaves before the head while the route still works',
  LEASE,
  async (probe, store, h2) => {
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
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      close: () => new Promise((resolve) => server.close(resolve)),
    };
  },
  { http2: true },
);
