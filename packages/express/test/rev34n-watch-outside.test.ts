import { once } from 'node:events';
import type { Server } from 'node:http';
import { connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { heldWhileRunning, idempotency } from '../src/index.js';

// rev34n (review of node34's lease-after-end marker): a timeout middleware mounted before idem
// answers 503 after the client left (clients time out about when servers do), while the route
// still works, for longer than a lease, and then fails. A failed route's key is released (a
// retry may run it; main did so). node34's watch took that still-working route for one that
// awaits a 'finish' that never comes and wrote the answered_outside marker a lease after the
// 503: retries got a 500 for the whole retention, never the retry the failure allows. Fixed:
// the watch starts only for an end the route's own work made (the node34 case), never for one
// from outside it, whose route is known to still run.

const LEASE = 200;
let runs = 0;
const started = new Map<string, () => void>();
const timeouts = new Map<string, () => void>();
const work = new Map<string, () => void>();
const closed = new Map<string, Promise<unknown>>();
let server: Server;
let url = '';

beforeAll(async () => {
  const app = express();
  app.use((req, res, next) => {
    const key = String(req.headers['idempotency-key']);
    closed.set(key, once(req.socket, 'close'));
    timeouts.set(key, () => {
      if (!res.headersSent) res.status(503).send('timed out');
    });
    next();
  });
  app.use(
    idempotency({ store: createMemoryStore(), scope: 'global', leaseMs: LEASE, maxHoldMs: 60_000 }),
  );
  app.post(
    '/slow',
    heldWhileRunning(async (req, res) => {
      runs += 1;
      if (runs > 1) {
        res.status(201).json({ runs });
        return;
      }
      const key = String(req.headers['idempotency-key']);
      await new Promise<void>((resolve) => {
        work.set(key, resolve);
        started.get(key)?.();
      });
      throw new Error('downstream failed');
    }),
  );
  // Express's final handler answers the rethrow: headers went out already, it is quiet.
  app.use((_error: unknown, _req: express.Request, _res: express.Response, next: () => void) =>
    next(),
  );
  server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
afterAll(() => {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(resolve));
});

describe('rev34n express: the lease-after-end watch and a route that still works', () => {
  it('an outside 503 after the client left, the route fails later: released, a retry runs', async () => {
    const key = `rev34n-outside-${process.pid}`;
    const running = new Promise<void>((resolve) => started.set(key, resolve));
    const socket = connect(Number(new URL(url).port), '127.0.0.1');
    socket.on('error', () => {});
    socket.write(
      `POST /slow HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`,
    );
    await running;
    socket.destroy();
    await closed.get(key);
    timeouts.get(key)?.();
    const post = () => send(url, '/slow', { key, body: {} });
    // The route still works, for several leases: its key stays held (409), never marked.
    for (let i = 0; i < 4; i += 1) {
      await sleep(LEASE);
      expect((await post()).status).toBe(409);
    }
    work.get(key)?.();
    let last = 409;
    for (let i = 0; i < 40 && last === 409; i += 1) {
      await sleep(LEASE / 8);
      last = (await post()).status;
    }
    expect(last).toBe(201);
    expect(runs).toBe(2);
  });
});
