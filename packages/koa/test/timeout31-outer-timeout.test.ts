import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type OuterTimeoutProbe, outerTimeoutProbe, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// timeout31 FINDING (MEDIUM-HIGH, exactly-once; fixed): a request-timeout middleware mounted
// OUTSIDE idem (it races `next()` against a timer and answers 503) sent its 503 while the route
// still ran (charging a card). The recorder saw a response that is not final end and released
// the key at once: a retry sent after the 503 acquired it and ran the route a second time,
// beside the first. Now the key stays held (409 to retries) until the route settled.

const LEASE = 300;
const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

/**
 * A Koa app: an outer timeout middleware (503 `timed out` after 100 ms), idem, then `POST
 * /charges` (`await probe.work()`, 201 `{ run }`) and `POST /own` (503 `{ run }` at once).
 */
async function start(probe: OuterTimeoutProbe) {
  const app = new Koa();
  app.silent = true;
  app.use(async (ctx, next) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        ctx.status = 503;
        ctx.body = 'timed out';
        resolve();
      }, 100);
    });
    await Promise.race([next(), timedOut]);
    clearTimeout(timer);
  });
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE }));
  app.use(async (ctx) => {
    if (ctx.path === '/own') {
      ctx.status = 503;
      ctx.body = { own: true };
      return;
    }
    const run = await probe.work();
    ctx.status = 201;
    ctx.body = { run };
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('timeout31 koa: a timeout middleware outside idem answers 503 while the route runs', () => {
  it('retries after the 503 get 409 while the route runs; then released (it never runs twice at once)', async () => {
    const probe = outerTimeoutProbe(LEASE);
    // Koa drops the route's `ctx.status` once the 503 went out: its own outcome is not known,
    // so the key is released once it settled (a retry then runs it again, after it).
    await probe.check(await start(probe), '/charges', 503, false);
  });

  it("the route's own 503 (no timeout, nothing running) still releases the key", async () => {
    const url = await start(outerTimeoutProbe(LEASE));
    for (let i = 0; i < 2; i += 1) {
      const answer = await send(url, '/own', { key: 'own-1', body: { a: 1 } });
      expect([answer.status, answer.headers['idempotent-replayed']]).toEqual([503, undefined]);
    }
  });
});
