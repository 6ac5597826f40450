import type { Server } from 'node:http';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keyedGates, statusOnceFree } from '../../http-conformance/test/node34-kit.js';
import { heldWhileRunning, idempotency } from '../src/index.js';

// node34 (exactly-once, "same-turn settle"): a timeout middleware before idem answers 503, and
// the route's work ends in that same turn (woken by the timeout's own timer). The recorder took
// a handler that settles within the turn the response ended in for one that answered it
// itself, and released the key: a retry ran the route a second time though its work had run.
// Now an end made outside the route's own work (see @idem/http's runHeld) is never its answer:
// the answered_outside marker (500), one run. The route's own 503, settling as it answers, is
// still its own (released, a retry runs).

const gates = keyedGates();
let runs = 0;
let server: Server;
let url = '';

beforeAll(async () => {
  const app = express();
  app.use((req, res, next) => {
    const timer = setTimeout(() => {
      if (res.headersSent) return;
      res.status(503).send('timed out');
      gates.open(req.headers['idempotency-key']);
    }, 60);
    res.once('close', () => clearTimeout(timer));
    next();
  });
  app.use(idempotency({ store: createMemoryStore(), scope: 'global' }));
  app.post(
    '/charges',
    heldWhileRunning(async (req, res) => {
      runs += 1;
      await gates.wait(req.headers['idempotency-key']);
      if (!res.headersSent) res.status(201).json({ runs });
    }),
  );
  app.post(
    '/own',
    heldWhileRunning(async (_req, res) => {
      runs += 1;
      res.status(503).json({ own: true });
    }),
  );
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const address = server.address();
  url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

describe('node34 express: an outside 503 and the route settling in the same turn', () => {
  it('is not the route own answer: the marker, never a second run', async () => {
    const before = runs;
    const key = `node34-express-same-turn-${process.pid}`;
    const post = () => send(url, '/charges', { key, body: {} });
    expect((await post()).status).toBe(503);
    expect(await statusOnceFree(post)).toBe(500);
    expect(runs - before).toBe(1);
  });

  it('the route own 503 is still its own: released, a retry runs', async () => {
    const before = runs;
    const key = `node34-express-own-${process.pid}`;
    expect((await send(url, '/own', { key, body: {} })).status).toBe(503);
    expect((await send(url, '/own', { key, body: {} })).status).toBe(503);
    expect(runs - before).toBe(2);
  });
});
