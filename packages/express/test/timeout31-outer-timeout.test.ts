import { describeOuterTimeout, listening } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { heldWhileRunning, holdWhile, idempotency } from '../src/index.js';

// timeout31 FINDING (MEDIUM-HIGH, exactly-once; fixed where the route's work is known): a
// request-timeout middleware mounted BEFORE idem (connect-timeout, a hand-written
// `setTimeout(() => res.status(503).send(...))`) answered 503 while the route still ran. The
// recorder saw a response that is not final end and released the key at once: a retry sent
// after the 503 ran the route a second time, beside the first. Express hands a route's promise
// to nothing before it; a route wrapped in `heldWhileRunning` (or whose work is given to
// `holdWhile(res, promise)`) keeps the key held (409 to retries) until its work settled.
// timeout31b FINDING (MEDIUM-HIGH, exactly-once; fixed): the key was then released, so a later
// retry ran the route a second time (after it) though its work had run to its end. Now work
// that ran to its end leaves the `answered_outside` not-recorded marker (retries get a 500
// outcome-not-recorded problem); work that threw is still released (a retry runs it).

const LEASE = 300;

for (const path of ['/wrapped', '/held'])
  describeOuterTimeout(
    `timeout31 express ${path}: a timeout middleware before idem answers 503 while the route runs`,
    LEASE,
    async (probe) => {
      const app = express();
      app.use((_req, res, next) => {
        const timer = setTimeout(() => {
          if (!res.headersSent) res.status(503).send('timed out');
        }, 100);
        res.once('close', () => clearTimeout(timer));
        next();
      });
      app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE }));
      const route = async (res: express.Response, work: () => Promise<number>) => {
        const run = await work();
        if (!res.headersSent) res.status(201).json({ run });
      };
      for (const [at, work] of [
        ['/charges', probe.work],
        ['/fails', probe.workOrThrow],
      ] as const)
        if (path === '/wrapped')
          app.post(
            at,
            heldWhileRunning(async (_req, res) => route(res, work)),
          );
        else app.post(at, (_req, res) => holdWhile(res, route(res, work)));
      app.post(
        '/own',
        heldWhileRunning(async (_req, res) => {
          res.status(503).json({ own: true });
        }),
      );
      return listening(app.listen(0, '127.0.0.1'));
    },
    { timeoutStatus: 503, replay: false },
  );
