import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: bounded time. A route that throws once its head went out: Express's final handler
// can no longer answer 500 and destroys the socket (`req.socket.destroy()`). The response is
// cut by the server, for good: nothing will ever end it. The design: "a stream that breaks
// is not a success" (released, a retry runs again).

const servers: Server[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start(afterWrite: boolean, leaseMs?: number) {
  let runs = 0;
  const app = express();
  app.use(
    idempotency({ store: createMemoryStore(), scope: 'global', leaseMs, onWarning: () => {} }),
  );
  app.post('/charges', async (_req, res) => {
    runs++;
    if (afterWrite) {
      res.status(200).type('text/plain');
      res.write('partial');
      await sleep(20);
    }
    throw new Error('the route failed');
  });
  // Quiet (Express would print the stack); the same behaviour as its final handler.
  app.use(
    (_error: unknown, req: express.Request, res: express.Response, _next: express.NextFunction) => {
      if (res.headersSent) req.socket.destroy();
      else res.status(500).type('text/plain').send('failed');
    },
  );
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs };
}

async function post(port: number, key: string) {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/charges`, {
      method: 'POST',
      headers: { 'idempotency-key': key },
      signal: AbortSignal.timeout(5_000),
    });
    await response.arrayBuffer();
    return response.status;
  } catch {
    return 'cut';
  }
}

describe('rev10 express: a route that throws after writing', () => {
  // Declined as asked, bounded instead (was FINDING MEDIUM: the socket Express destroys after
  // a route threw past its head is taken for a client that left, and the key answers 409 for up
  // to two leases before a retry may run). Freeing the key at once would need telling a socket
  // this process destroyed from a client that left, by the connection's state (built in
  // wt/rev10c, c90d45d, not taken): it would also release the key of an app that destroys a
  // socket itself and keeps working, so a retry could run beside it. A wait bounded by two
  // leases is the safe side; this pins the bound (Koa's throw after the head is held alike).
  it('the cut response frees the key within two leases: held first, then a retry runs again', async () => {
    const leaseMs = 600;
    const { port, runs } = await start(true, leaseMs);
    const cutAt = performance.now();
    expect(await post(port, 'after-write')).toBe('cut');
    await sleep(100);
    expect(await post(port, 'after-write')).toBe(409);
    let status: number | 'cut' = 409;
    while (status === 409 && performance.now() - cutAt < 2 * leaseMs + 2_000) {
      await sleep(100);
      status = await post(port, 'after-write');
    }
    // The retry ran the route again (and was cut like the first).
    expect(status).toBe('cut');
    expect(performance.now() - cutAt).toBeLessThan(2 * leaseMs + 2_000);
    expect(runs()).toBe(2);
  });

  it('held: a route that throws before writing: 500, released, the retry runs at once', async () => {
    const { port, runs } = await start(false);
    expect(await post(port, 'before-write')).toBe(500);
    expect(await post(port, 'before-write')).toBe(500);
    expect(runs()).toBe(2);
  });
});
