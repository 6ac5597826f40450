import { describeOuterTimeout, listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { idempotency } from '../src/index.js';

// timeout31 FINDING (MEDIUM-HIGH, exactly-once; fixed): a request-timeout middleware mounted
// OUTSIDE idem (it races `next()` against a timer and answers 503) sent its 503 while the route
// still ran (charging a card). The recorder saw a response that is not final end and released
// the key at once: a retry sent after the 503 acquired it and ran the route a second time,
// beside the first. Now the key stays held (409 to retries) until the route's `next()` settled.
// Koa drops the route's `ctx.status` once the 503 went out: its own outcome is not known.
// timeout31b FINDING (MEDIUM-HIGH, exactly-once; fixed): the key was then released, so a later
// retry ran the route a second time (after it) though it had run to its end. Now a route that
// ran to its end leaves the `answered_outside` not-recorded marker (retries get a 500
// outcome-not-recorded problem); one that threw is still released (a retry runs it).

const LEASE = 300;

describeOuterTimeout(
  'timeout31 koa: a timeout middleware outside idem answers 503 while the route runs',
  LEASE,
  async (probe) => {
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
      const run = await (ctx.path === '/fails' ? probe.workOrThrow() : probe.work());
      ctx.status = 201;
      ctx.body = { run };
    });
    return listening(app.listen(0, '127.0.0.1'));
  },
  { timeoutStatus: 503, replay: false },
);
