import type { AddressInfo } from 'node:net';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express, { type NextFunction, type Request, type Response } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { heldWhileRunning, idempotency } from '../src/index.js';

// rev33c attacks on nest33's "a write after the end shows the held route reached its answer"
// (@idem/http's recorder), with NO timeout anywhere: the route answers itself.
// FINDING (MEDIUM, a failure that may be retried is blocked): a route that answers its own 502
// and rethrows for the error middleware, whose `res.status(500).json()` then throws
// ERR_HTTP_HEADERS_SENT (no `headersSent` check), was marked answered_outside: every retry got a
// 500 outcome-not-recorded for the whole retention, though the route failed (released before
// nest33). That write came after the route's promise settled: it is not the route's. Now only a
// write while the held work is still pending counts.

const runs = new Map<string, number>();
const ran = (path: string) => runs.set(path, (runs.get(path) ?? 0) + 1);
const tick = () => new Promise((resolve) => setImmediate(resolve));

const app = express();
app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
app.post(
  '/own-502-rethrows',
  heldWhileRunning(async (req: Request, res: Response) => {
    ran(req.path);
    await tick();
    res.status(502).json({ error: 'upstream' });
    throw new Error('the upstream failed');
  }),
);
app.post(
  '/own-502-rethrows-later',
  heldWhileRunning(async (req: Request, res: Response) => {
    ran(req.path);
    await tick();
    res.status(502).json({ error: 'upstream' });
    await tick();
    throw new Error('the upstream failed');
  }),
);
app.post(
  '/streams-201',
  heldWhileRunning(async (req: Request, res: Response) => {
    ran(req.path);
    res.status(201).setHeader('content-type', 'text/plain');
    await tick();
    res.write('charged ');
    await tick();
    res.write(`${runs.get(req.path)}`);
    await tick();
    res.end();
    await tick();
  }),
);
app.post(
  '/own-201-then-works',
  heldWhileRunning(async (req: Request, res: Response) => {
    ran(req.path);
    await tick();
    res.status(201).json({ charged: runs.get(req.path) });
    await new Promise((resolve) => setTimeout(resolve, 30));
  }),
);
// The error middleware of many apps: answers whatever went out before.
app.use((_error: unknown, _req: Request, res: Response, _next: NextFunction) => {
  res.status(500).json({ error: 'internal' });
});

let url = '';
let server: ReturnType<typeof app.listen>;
beforeAll(async () => {
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

describe('rev33c express: held routes answering themselves, no timeout anywhere', () => {
  for (const path of ['/own-502-rethrows', '/own-502-rethrows-later'])
    it(`${path}: its own 502, then the error middleware writes after the end: released, a retry runs it`, async () => {
      const key = `rev33c-express${path}-${process.pid}`;
      const post = () => send(url, path, { key, body: {} });
      expect((await post()).status).toBe(502);
      let last = 409;
      for (let i = 0; i < 40 && last === 409; i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        last = (await post()).status;
      }
      expect(last).toBe(502);
      expect(runs.get(path)).toBe(2);
    });

  for (const path of ['/streams-201', '/own-201-then-works'])
    it(`${path}: its own 201 (written over later ticks) recorded and replayed`, async () => {
      const key = `rev33c-express${path}-${process.pid}`;
      const first = await send(url, path, { key, body: {} });
      expect(first.status).toBe(201);
      let replay = await send(url, path, { key, body: {} });
      for (let i = 0; i < 40 && replay.status === 409; i += 1) {
        await new Promise((resolve) => setTimeout(resolve, 25));
        replay = await send(url, path, { key, body: {} });
      }
      expect(replay.status).toBe(201);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.equals(first.body)).toBe(true);
      expect(runs.get(path)).toBe(1);
    });
});
