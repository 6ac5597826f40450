import { createServer as createH2Server } from 'node:http2';
import { type ServerType, serve } from '@hono/node-server';
import { leftBeforeHeadProbe } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, describe, it } from 'vitest';
import { idempotency } from '../src/index.js';

// leftearly30 check (no fault found): a client that leaves before the head while the handler
// still works (its own timeout during a slow call longer than the lease) had the Node adapters
// run the handler a second time for its retry once two leases passed. On the Web Response path
// nothing watches the client before the handler returned its Response (`recordResponse` does
// from then on), so the lease is renewed while it works: retries get 409, then the replay, on
// @hono/node-server over HTTP/1.1 and HTTP/2 alike.

const LEASE = 300;
const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

async function start(h2: boolean) {
  const probe = leftBeforeHeadProbe(LEASE);
  const app = new Hono();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE }));
  app.post('/jobs', async (c) => c.json({ run: await probe.work() }, 201));
  const port = await new Promise<number>((resolve) => {
    const options = { fetch: app.fetch, port: 0, hostname: '127.0.0.1' };
    servers.push(
      serve(h2 ? { ...options, createServer: createH2Server } : options, (info) =>
        resolve(info.port),
      ),
    );
  });
  return { probe, url: `http://127.0.0.1:${port}` };
}

describe('leftearly30 hono: the client leaves before the head while the handler works', () => {
  it('node-server, HTTP/1.1: retries past two leases get 409, then the replay; run once', async () => {
    const { probe, url } = await start(false);
    await probe.check(url, '/jobs');
  });

  it('node-server, HTTP/2 (a stream reset): the same', async () => {
    const { probe, url } = await start(true);
    await probe.check(url, '/jobs', { http2: true });
  });
});
