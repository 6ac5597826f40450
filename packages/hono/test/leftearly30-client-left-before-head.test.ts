import { createServer as createH2Server } from 'node:http2';
import { serve } from '@hono/node-server';
import { describeLeftBeforeHead } from '@idem/http-conformance';
import { Hono } from 'hono';
import { idempotency } from '../src/index.js';

// leftearly30 check (no fault found): a client that leaves before the head while the handler
// still works (its own timeout during a slow call longer than the lease) had the Node adapters
// run the handler a second time for its retry once two leases passed. On the Web Response path
// nothing watches the client before the handler returned its Response (`recordResponse` does
// from then on), so the lease is renewed while it works: retries get 409, then the replay, on
// @hono/node-server over HTTP/1.1 and HTTP/2 alike.

const LEASE = 300;

describeLeftBeforeHead(
  'leftearly30 hono on node-server: the client leaves before the head while the handler works',
  LEASE,
  async (probe, store, h2) => {
    const app = new Hono();
    app.use(idempotency({ store, scope: 'global', leaseMs: LEASE }));
    app.post('/jobs', async (c) => c.json({ run: await probe.work() }, 201));
    const options = { fetch: app.fetch, port: 0, hostname: '127.0.0.1' };
    let server!: ReturnType<typeof serve>;
    const port = await new Promise<number>((resolve) => {
      server = serve(h2 ? { ...options, createServer: createH2Server } : options, (info) =>
        resolve(info.port),
      );
    });
    return {
      url: `http://127.0.0.1:${port}`,
      close: () => new Promise((resolve) => server.close(resolve)),
    };
  },
  { http2: true },
);
