// Bench server for @idem/http's bench/run.mjs: the README's app twice, without and with
// the middleware, on two loopback ports (printed as one JSON line).
import { idempotency } from '@idem/express';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';

function app(withIdempotency) {
  const app = express();
  app.use((req, res, next) => {
    const account = req.get('x-account-id');
    if (!account) return void res.status(401).json({ error: 'unauthenticated' });
    res.locals.account = account;
    next();
  });
  if (withIdempotency) {
    app.use(
      idempotency({
        store: createMemoryStore({
          maxEntries: 1_000_000,
          maxBytes: 2 ** 30,
          sweepIntervalMs: 1_000,
        }),
        retentionMs: 10_000,
        scope: (req) => ({ principal: req.res.locals.account }),
      }),
    );
  }
  app.use(express.json());
  let next = 1;
  app.post('/charges', (req, res) => {
    res.status(201).json({ id: `ch_${next++}`, amount: req.body.amount, status: 'succeeded' });
  });
  return app;
}

const listen = (app) =>
  new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
const [plain, idem] = await Promise.all([listen(app(false)), listen(app(true))]);
console.log(JSON.stringify({ plain, idem }));
process.on('SIGTERM', () => process.exit(0));
