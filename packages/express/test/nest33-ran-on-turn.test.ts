import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { heldWhileRunning, idempotency } from '../src/index.js';

// nest33 attack on the "ran on past the turn" judgment (@idem/http's recorder) of a route held
// with heldWhileRunning under a timeout middleware mounted before idem that answers 503:
// - a route that writes its own answer after its work (`res.status(201).json()`) when the 503
//   went out first: Express throws ERR_HTTP_HEADERS_SENT, the route's promise rejects, and the key
//   was RELEASED as for a route that failed: a retry ran the route a second time though its work
//   had run (FINDING, HIGH, exactly-once). Its write after the end shows it reached its answer:
//   now the answered_outside marker.
// - a route whose own answer is final (201) before the timeout: recorded and replayed.
// - a route whose own 503 goes out and which then returns in a later tick: released (its own).

const TIMEOUT_MS = 100;
let runs = 0;

const app = express();
app.use((_req, res, next) => {
  const timer = setTimeout(() => {
    if (!res.headersSent) res.status(503).send('timed out');
  }, TIMEOUT_MS);
  res.once('close', () => clearTimeout(timer));
  next();
});
app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
app.post(
  '/writes-late',
  heldWhileRunning(async (_req, res) => {
    runs += 1;
    await sleep(TIMEOUT_MS * 3);
    res.status(201).json({ charged: runs });
  }),
);
app.post(
  '/writes-later-tick',
  heldWhileRunning(async (_req, res) => {
    runs += 1;
    await sleep(TIMEOUT_MS * 3);
    await new Promise((resolve) => setImmediate(resolve));
    if (!res.headersSent) res.status(201).json({ charged: runs });
  }),
);
app.post(
  '/own-201',
  heldWhileRunning(async (_req, res) => {
    runs += 1;
    await new Promise((resolve) => setImmediate(resolve));
    res.status(201).json({ charged: runs });
  }),
);
app.post(
  '/own-503-later',
  heldWhileRunning(async (_req, res) => {
    runs += 1;
    await new Promise((resolve) => setImmediate(resolve));
    res.status(503).json({ busy: true });
  }),
);

let url = '';
let server: ReturnType<typeof app.listen>;
beforeAll(async () => {
  server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

async function afterHeld(post: () => Promise<{ status: number }>): Promise<number> {
  let last = 409;
  for (let i = 0; i < 40 && last === 409; i += 1) {
    await sleep(50);
    last = (await post()).status;
  }
  return last;
}

describe('nest33 express: a route held with heldWhileRunning under a timeout before idem', () => {
  for (const path of ['/writes-late', '/writes-later-tick'])
    it(`${path}: the 503 went out, the route ran to its answer: the marker, never a second run`, async () => {
      const before = runs;
      const key = `nest33-express${path}-${process.pid}`;
      const post = () => send(url, path, { key, body: {} });
      expect((await post()).status).toBe(503);
      expect(await afterHeld(post)).toBe(500);
      expect(runs - before).toBe(1);
    });

  it('/own-201: its own final answer is recorded and replayed', async () => {
    const before = runs;
    const key = `nest33-express-own201-${process.pid}`;
    const first = await send(url, '/own-201', { key, body: {} });
    expect(first.status).toBe(201);
    const replay = await send(url, '/own-201', { key, body: {} });
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.equals(first.body)).toBe(true);
    expect(runs - before).toBe(1);
  });

  it('/own-503-later: its own 503 given in a later tick is released: a retry runs it', async () => {
    const before = runs;
    const key = `nest33-express-own503-${process.pid}`;
    expect((await send(url, '/own-503-later', { key, body: {} })).status).toBe(503);
    expect((await send(url, '/own-503-later', { key, body: {} })).status).toBe(503);
    expect(runs - before).toBe(2);
  });
});
