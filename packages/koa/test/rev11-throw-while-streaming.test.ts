import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev11: the rev10c fix releases the key when a middleware throws after the head went out
// (`recorder.fail` when headersSent && !writableEnded). Attack: the head and a body stream
// are already flowing (ctx.respond = false, a stream piped into ctx.res) when the handler's
// later await throws; the stream keeps writing and ends normally afterwards.

const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(
    servers.map(
      (server) =>
        new Promise((resolve) => {
          server.closeAllConnections();
          server.close(resolve);
        }),
    ),
  );
});

async function start() {
  let runs = 0;
  const app = new Koa();
  app.silent = true;
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.use(async (ctx) => {
    runs++;
    const n = runs;
    ctx.respond = false;
    const body = new PassThrough();
    ctx.res.writeHead(200, { 'content-type': 'text/plain' });
    body.pipe(ctx.res);
    body.write(`run ${n} part 1;`);
    setTimeout(() => body.end(`run ${n} part 2`), 300);
    await sleep(10);
    throw new Error('audit log write failed');
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs };
}

async function post(port: number, key: string) {
  const response = await fetch(`http://127.0.0.1:${port}/jobs`, {
    method: 'POST',
    headers: { 'idempotency-key': key },
    signal: AbortSignal.timeout(3_000),
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed'),
    body: await response.text(),
  };
}

describe('rev11 koa: a throw after the head while the body still streams', () => {
  // FIXED (was FINDING MEDIUM, a regression of rev10c, reverted): a throw after the head released the key at once although the response keeps streaming and ends normally: a retry runs the handler again while the first is still answering, and every later retry runs it again (before rev10c: 409, then a replay of the 200)
  it('a response that completes after a late throw is one execution: the retry is 409 while it streams, then a replay', async () => {
    const { port, runs } = await start();
    const firstP = post(port, 'rev11-koa-stream');
    await sleep(100);
    const second = await post(port, 'rev11-koa-stream');
    const first = await firstP;
    await sleep(100);
    const third = await post(port, 'rev11-koa-stream');
    expect(first.status).toBe(200);
    expect(first.body).toBe('run 1 part 1;run 1 part 2');
    // Observed: second and third are 200 'run 2 ...', 'run 3 ...' (runs === 3).
    expect(second.status).toBe(409);
    expect(third.replayed).toBe('true');
    expect(third.body).toBe(first.body);
    expect(runs()).toBe(1);
  });
});
