import { serve } from '@hono/node-server';
import { describeOuterTimeout } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { timeout } from 'hono/timeout';
import { idempotency } from '../src/index.js';

// timeout31 check (no fault): `hono/timeout` mounted OUTSIDE idem answers 504 while the handler
// still runs. The middleware records `c.res` only once `await next()` settled, so the key stays
// held meanwhile (409 to retries). Hono drops the Response the handler then returns (compose sets
// `c.res` only while the context is not finalized), so `c.res` is the 504 that went out, not
// recordable.
// nesthono32 FINDING (MEDIUM-HIGH, exactly-once; fixed): the key was then released once the
// handler settled, even when it ran to its end, so a retry after it ran the handler a second
// time. Now a handler that ran to its end after the 504 went out leaves the `answered_outside`
// not-recorded marker (retries get a 500 outcome-not-recorded problem); one that threw is still
// released (a retry runs it); the handler's own 503 is released at once, as before. This test
// asserted `afterwards: 'released'` for that case before (the known gap), now `'marked'`.

const LEASE = 300;

describeOuterTimeout(
  'timeout31 hono: hono/timeout outside idem answers 504 while the handler runs',
  LEASE,
  async (probe) => {
    const app = new Hono();
    app.use(timeout(100));
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE }));
    app.post('/charges', async (c) => c.json({ run: await probe.work() }, 201));
    app.post('/fails', async (c) => c.json({ run: await probe.workOrThrow() }, 201));
    app.post('/own', (c) => c.json({ own: true }, 503));
    let server!: ReturnType<typeof serve>;
    const port = await new Promise<number>((resolve) => {
      server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
        resolve(info.port),
      );
    });
    return {
      url: `http://127.0.0.1:${port}`,
      close: () => new Promise((resolve) => server.close(resolve)),
    };
  },
  { timeoutStatus: 504, replay: false, afterwards: 'marked' },
);
