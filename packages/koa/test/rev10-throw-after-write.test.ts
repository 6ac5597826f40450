import type { Server } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev10: bounded time. A downstream middleware that throws once its head went out: Koa's
// error handler cannot answer 500 any more and leaves the response as it is (never ended).
// The error passes back through the idem middleware's `await next()`, where the adapter
// could see that the execution failed; it does not, and the recorder waits for an end that
// never comes, renewing the lease while the first client stays connected: every retry gets
// 409 until `maxHoldMs` (1 h by default).

const servers: Server[] = [];
const sockets: Socket[] = [];
afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

async function start(afterWrite: boolean) {
  let runs = 0;
  const app = new Koa();
  app.silent = true;
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.use(async (ctx) => {
    runs++;
    if (afterWrite) {
      ctx.res.writeHead(200, { 'content-type': 'text/plain' });
      ctx.res.write('partial');
      await sleep(20);
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
  // Left open: a fix (release at the throw, rev10c) was merged and reverted: rev11 showed a
  // response still streaming after the throw then completed while a retry ran the handler
  // again (test/rev11-throw-while-streaming.test.ts). A wait until maxHoldMs is the safe side.
  // FINDING (MEDIUM): the error that comes back through the middleware's await next() after the head went out is not handed to the recorder: Koa leaves the response open, the key stays in progress and every retry is 409 until maxHoldMs (1 h by default; measured: still 409 after 8 s with leaseMs 1000, freed at maxHoldMs 4000); fix in koa-middleware.ts: catch around await next() and recorder.fail(error) (or end/destroy the response) when the head was sent
  it.fails('the failed execution frees its key: a retry soon after runs again, not 409', async () => {
    const { port, runs } = await start(true);
    stayingClient(port, 'throw-after-write');
    await sleep(500);
    // Observed: 409 in-progress.
    expect(await retryStatus(port, 'throw-after-write')).not.toBe(409);
    expect(runs()).toBe(2);
  });

  it('held: a throw before the head: 500, released, the retry runs at once', async () => {
    const { port, runs } = await start(false);
    expect(await retryStatus(port, 'throw-before')).toBe(500);
    expect(await retryStatus(port, 'throw-before')).toBe(500);
    expect(runs()).toBe(2);
  });
});
