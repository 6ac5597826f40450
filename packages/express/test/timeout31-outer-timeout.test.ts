import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type OuterTimeoutProbe, outerTimeoutProbe, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { heldWhileRunning, holdWhile, idempotency } from '../src/index.js';

// timeout31 FINDING (MEDIUM-HIGH, exactly-once; fixed where the route's work is known): a
// request-timeout middleware mounted BEFORE idem (connect-timeout, a hand-written
// `setTimeout(() => res.status(503).send(...))`) answered 503 while the route still ran. The
// recorder saw a response that is not final end and released the key at once: a retry sent
// after the 503 ran the route a second time, beside the first. Express hands a route's promise
// to nothing before it; a route wrapped in `heldWhileRunning` (or whose work is given to
// `holdWhile(res, promise)`) keeps the key held (409 to retries) until its work settled.

const LEASE = 300;
const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

async function start(probe: OuterTimeoutProbe) {
  const app = express();
  app.use((_req, res, next) => {
    const timer = setTimeout(() => {
      if (!res.headersSent) res.status(503).send('timed out');
    }, 100);
    res.once('close', () => clearTimeout(timer));
    next();
  });
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE }));
  const route = async (res: express.Response) => {
    const run = await probe.work();
    if (!res.headersSent) res.status(201).json({ run });
  };
  app.post(
    '/wrapped',
    heldWhileRunning(async (_req, res) => route(res)),
  );
  app.post('/held', (_req, res) => holdWhile(res, route(res)));
  app.post(
    '/own',
    heldWhileRunning(async (_req, res) => {
      res.status(503).json({ own: true });
    }),
  );
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('timeout31 express: a timeout middleware before idem answers 503 while the route runs', () => {
  for (const path of ['/wrapped', '/held'])
    it(`${path}: retries after the 503 get 409 while the route runs; it never runs twice at once`, async () => {
      const probe = outerTimeoutProbe(LEASE);
      await probe.check(await start(probe), path, 503, false);
    });

  it("a held route's own 503 still releases the key", async () => {
    const url = await start(outerTimeoutProbe(LEASE));
    for (let i = 0; i < 2; i += 1) {
      const answer = await send(url, '/own', { key: 'own-1', body: { a: 1 } });
      expect([answer.status, answer.headers['idempotent-replayed']]).toEqual([503, undefined]);
    }
  });
});
