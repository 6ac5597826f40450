import type { Server } from 'node:http';
import http2 from 'node:http2';
import { type AddressInfo, connect } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// break30 FINDING (HIGH, exactly-once; fixed): a client that left before the head (its own
// timeout, the usual reason to retry) while the route was still working (an LLM call, a slow
// payment API) had its response watched for silence as one whose body had stopped: after a
// lease without output the heartbeats stopped, the lease lapsed, and the retry ran the route a
// second time beside the first (the first one's outcome then refused: lease lost). Only the
// route's own end tells it stopped: while `await next()` is pending the lease is renewed (up to
// maxHoldMs, as for a client that stays), and the silence watch starts when it settles.

const servers: (Server | http2.Http2Server)[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

/** A Koa app whose route awaits `work(run)` (run 1, 2...) then answers 201 `{ run }`. */
async function start(leaseMs: number, work: (run: number) => Promise<void>, h2 = false) {
  let runs = 0;
  const app = new Koa();
  app.silent = true;
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs }));
  app.use(async (ctx) => {
    runs += 1;
    const run = runs;
    await work(run);
    ctx.status = 201;
    ctx.body = { run };
  });
  const server = h2 ? http2.createServer(app.callback()) : app.listen(0, '127.0.0.1');
  if (h2) server.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return { port: (server.address() as AddressInfo).port, runs: () => runs };
}

/**
 * A keyed POST over HTTP/2 (h2c): its status, or with `leaveOnce`, a stream reset (CANCEL)
 * once `leaveOnce` says so, before any answer (0).
 */
function postH2(port: number, key: string, leaveOnce?: () => boolean): Promise<number> {
  return new Promise((resolve) => {
    const client = http2.connect(`http://127.0.0.1:${port}`);
    client.on('error', () => {});
    const request = client.request({ ':method': 'POST', ':path': '/jobs', 'idempotency-key': key });
    request.on('error', () => {});
    request.end();
    request.on('response', (headers) => {
      request.resume();
      request.on('end', () => {
        client.close();
        resolve(Number(headers[':status']));
      });
    });
    if (leaveOnce)
      void (async () => {
        for (let i = 0; i < 200 && !leaveOnce(); i += 1) await sleep(10);
        request.close(http2.constants.NGHTTP2_CANCEL);
        client.close();
        resolve(0);
      })();
  });
}

/** A client that sends a keyed POST and leaves once the route started, before any answer. */
async function leaveEarly(port: number, key: string, started: () => boolean): Promise<void> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(
    `POST /jobs HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nContent-Length: 0\r\n\r\n`,
  );
  for (let i = 0; i < 200 && !started(); i += 1) await sleep(10);
  socket.destroy();
}

async function retry(port: number, key: string, readBody = true) {
  const response = await fetch(`http://127.0.0.1:${port}/jobs`, {
    method: 'POST',
    headers: { 'idempotency-key': key },
    signal: AbortSignal.timeout(5_000),
  });
  const body = readBody ? await response.text() : '';
  if (!readBody) void response.body?.cancel().catch(() => {});
  return { status: response.status, replayed: response.headers.get('idempotent-replayed'), body };
}

describe('break30 koa: the client leaves before the head while the route still works', () => {
  it('retries past two leases get 409 while it works, then the replay: the route ran once', async () => {
    const leaseMs = 300;
    let finish!: () => void;
    const working = new Promise<void>((resolve) => {
      finish = resolve;
    });
    // Only the first run waits: a second one (the old source's) answers at once.
    const server = await start(leaseMs, (run) => (run === 1 ? working : Promise.resolve()));
    await leaveEarly(server.port, 'slow-1', () => server.runs() > 0);
    // Retries for five leases (the old source let one take over after at most two).
    const meanwhile: number[] = [];
    for (let i = 0; i < 10; i += 1) {
      await sleep(leaseMs / 2);
      meanwhile.push((await retry(server.port, 'slow-1')).status);
    }
    expect(server.runs()).toBe(1);
    expect(meanwhile.every((status) => status === 409)).toBe(true);
    finish();
    let last = await retry(server.port, 'slow-1');
    for (let i = 0; i < 100 && last.status === 409; i += 1) {
      await sleep(20);
      last = await retry(server.port, 'slow-1');
    }
    expect(last).toEqual({ status: 201, replayed: 'true', body: '{"run":1}' });
    expect(server.runs()).toBe(1);
  });

  it('HTTP/2: a stream reset before the head, the same: 409 while it works, then the replay, run once', async () => {
    const leaseMs = 300;
    let finish!: () => void;
    const working = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const server = await start(leaseMs, (run) => (run === 1 ? working : Promise.resolve()), true);
    await postH2(server.port, 'slow-h2', () => server.runs() > 0);
    const meanwhile: number[] = [];
    for (let i = 0; i < 10; i += 1) {
      await sleep(leaseMs / 2);
      meanwhile.push(await postH2(server.port, 'slow-h2'));
    }
    expect(server.runs()).toBe(1);
    expect(meanwhile.every((status) => status === 409)).toBe(true);
    finish();
    let status = await postH2(server.port, 'slow-h2');
    for (let i = 0; i < 100 && status === 409; i += 1) {
      await sleep(20);
      status = await postH2(server.port, 'slow-h2');
    }
    expect(status).toBe(201);
    expect(server.runs()).toBe(1);
  });

  it('held: a route that ended without answering (its response left open) still frees the key', async () => {
    // The silence watch still works once the route has settled: rev10's throw after the head.
    const leaseMs = 300;
    const app = new Koa();
    app.silent = true;
    let runs = 0;
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs }));
    app.use(async (ctx) => {
      runs += 1;
      ctx.res.writeHead(200, { 'content-type': 'text/plain' });
      ctx.res.write('partial');
      throw new Error('failed after the head');
    });
    const other = app.listen(0, '127.0.0.1');
    servers.push(other);
    await new Promise((resolve) => other.once('listening', resolve));
    const port = (other.address() as AddressInfo).port;
    await leaveEarly(port, 'open-1', () => runs > 0);
    // The retry that takes over gets its own head (200) and a body that never ends.
    let status = (await retry(port, 'open-1', false)).status;
    for (let i = 0; i < 100 && status === 409; i += 1) {
      await sleep(20);
      status = (await retry(port, 'open-1', false)).status;
    }
    expect(status).toBe(200);
    expect(runs).toBe(2);
  });
});
