import type { Server } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: bounded time. A downstream middleware that throws once its head went out: Koa's
// error handler cannot answer 500 any more and leaves the response as it is (never ended).
// The error passes back through the idem middleware's `await next()`; the adapter now hands
// the response to the recorder's silence watch, so the key is free within two leases instead
// of waiting for `maxHoldMs` (1 h by default) while the first client stays connected.

const servers: Server[] = [];
const sockets: Socket[] = [];
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

async function start(afterWrite: boolean, leaseMs?: number, destroy = false) {
  let runs = 0;
  const app = new Koa();
  app.silent = true;
  app.use(
    idempotency({ store: createMemoryStore(), scope: 'global', leaseMs, onWarning: () => {} }),
  );
  app.use(async (ctx) => {
    runs++;
    if (afterWrite) {
      ctx.res.writeHead(200, { 'content-type': 'text/plain' });
      ctx.res.write('partial');
      await sleep(20);
      if (destroy) ctx.res.destroy(new Error('the handler failed'));
    }
    throw new Error('the handler failed');
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs };
}

/** A client that sends the request and stays connected, reading what comes. */
function stayingClient(port: number, key: string): Socket {
  const socket = connect(port, '127.0.0.1');
  sockets.push(socket);
  socket.on('error', () => {});
  socket.resume();
  socket.write(
    `POST /jobs HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`,
  );
  return socket;
}

async function retryStatus(port: number, key: string): Promise<number | 'no head'> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/jobs`, {
      method: 'POST',
      headers: { 'idempotency-key': key },
      signal: AbortSignal.timeout(2_000),
    });
    void response.body?.cancel().catch(() => {});
    return response.status;
  } catch {
    return 'no head';
  }
}

describe('rev10 koa: a middleware that throws after writing its head', () => {
  // FIXED (was FINDING MEDIUM): the error that comes back through the middleware's await
  // next() after the head went out was not handed to the recorder: Koa leaves the response
  // open, the key stayed in progress and every retry was 409 until maxHoldMs (1 h by default;
  // measured: still 409 after 8 s with leaseMs 1000). Now the response is watched as one whose
  // client left: silent for a whole lease, its heartbeats stop, so the key is free within two
  // leases (as Express's). Not at once: something the route started may still write to the
  // response and end it (test/rev11-throw-while-streaming.test.ts), and a retry must not run
  // beside it.
  it('the failed execution frees its key within two leases: a retry then runs again, not 409', async () => {
    const leaseMs = 600;
    const { port, runs } = await start(true, leaseMs);
    const thrownAt = performance.now();
    stayingClient(port, 'throw-after-write');
    await sleep(200);
    // Within the first lease the key is held: the response might still be written to.
    expect(await retryStatus(port, 'throw-after-write')).toBe(409);
    let status: number | 'no head' = 409;
    while (status === 409 && performance.now() - thrownAt < 2 * leaseMs + 2_000) {
      await sleep(100);
      status = await retryStatus(port, 'throw-after-write');
    }
    // The retry ran the route (its head, 200, went out before it threw). Before the fix: 409
    // until maxHoldMs (1 h).
    expect(status).toBe(200);
    expect(performance.now() - thrownAt).toBeLessThan(2 * leaseMs + 2_000);
    expect(runs()).toBe(2);
  });

  it('a route that destroys its response past the head and throws: released at once', async () => {
    const { port, runs } = await start(true, undefined, true);
    stayingClient(port, 'destroy-after-write');
    await sleep(200);
    expect(runs()).toBe(1);
    // Not 409: the key was given back when the response was destroyed; the retry ran (200 head).
    expect(await retryStatus(port, 'destroy-after-write')).toBe(200);
    expect(runs()).toBe(2);
  });

  it('held: a throw before the head: 500, released, the retry runs at once', async () => {
    const { port, runs } = await start(false);
    expect(await retryStatus(port, 'throw-before')).toBe(500);
    expect(await retryStatus(port, 'throw-before')).toBe(500);
    expect(runs()).toBe(2);
  });
});
