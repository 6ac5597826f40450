// Bench server for @idem/http's bench/run.mjs: the README's app twice, without and with
// the middleware, on two loopback ports (printed as one JSON line).
import { serve } from '@hono/node-server';
import { idempotency } from '@idem/hono';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';

function app(withIdempotency) {
  const app = new Hono();
  app.use('/*', async (c, next) => {
    const account = c.req.header('x-account-id');
    if (!account) return c.json({ error: 'unauthenticated' }, 401);
    c.set('account', account);
    await next();
  });
  if (withIdempotency) {
    app.use(
      '/*',
      idempotency({
        store: createMemoryStore({
          maxEntries: 1_000_000,
          maxBytes: 2 ** 30,
          sweepIntervalMs: 1_000,
        }),
        retentionMs: 10_000,
        scope: (c) => ({ principal: c.get('account') }),
      }),
    );
  }
  let next = 1;
  app.post('/charges', async (c) => {
    const { amount } = await c.req.json();
    return c.json({ id: `ch_${next++}`, amount, status: 'succeeded' }, 201);
  });
  return app;
}

const listen = (app) =>
  new Promise((resolve) => {
    serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => resolve(info.port));
  });
const [plain, idem] = await Promise.all([listen(app(false)), listen(app(true))]);
console.log(JSON.stringify({ plain, idem }));
process.on('SIGTERM', () => process.exit(0));
