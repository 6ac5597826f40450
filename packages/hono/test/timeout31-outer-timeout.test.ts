import { serve } from '@hono/node-server';
import { outerTimeoutProbe, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// timeout31 check (no fault): `hono/timeout` mounted OUTSIDE idem answers 504 while the handler
// still runs. The middleware records `c.res` only once `await next()` settled, so the key stays
// held meanwhile (409 to retries). Hono drops the Response the handler then returns (compose sets
// `c.res` only while the context is not finalized), so `c.res` is the 504 that went out, not
// recordable: the key is released once the handler settled.

const LEASE = 300;
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
});

async function start(probe: ReturnType<typeof outerTimeoutProbe>) {
  const app = new Hono();
  app.use(timeout(100));
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE }));
  app.post('/charges', async (c) => c.json({ run: await probe.work() }, 201));
  app.post('/own', (c) => c.json({ own: true }, 503));
  let server!: ReturnType<typeof serve>;
  const port = await new Promise<number>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
  });
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${port}`;
}

describe('timeout31 hono: hono/timeout outside idem answers 504 while the handler runs', () => {
  it('retries after the 504 get 409 while the handler runs, then released once it settled (never twice at once)', async () => {
    const probe = outerTimeoutProbe(LEASE);
    // Hono drops the Response the handler returns once the timeout finalized the context
    // (compose sets `c.res` only while not finalized): its own outcome is not known to the
    // middleware, so the key is released once `await next()` settled.
    await probe.check(await start(probe), '/charges', 504, false);
  });

  it("the handler's own 503 still releases the key", async () => {
    const url = await start(outerTimeoutProbe(LEASE));
    for (let i = 0; i < 2; i += 1) {
      const answer = await send(url, '/own', { key: 'own-1', body: { a: 1 } });
      expect([answer.status, answer.headers['idempotent-replayed']]).toEqual([503, undefined]);
    }
  });
});
