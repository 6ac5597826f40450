import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// timeout31 FINDING (MEDIUM-HIGH, exactly-once; fixed): a request-timeout middleware mounted
// OUTSIDE idem (it races `next()` against a timer and answers 503) sent its 503 while the route
// still ran (charging a card). The recorder saw a response that is not final end and released
// the key at once: a retry sent after the 503 acquired it and ran the route a second time,
// beside the first. Now the key stays held (409 to retries) until the route settled.

const servers: Server[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

/**
 * A Koa app: an outer timeout middleware (503 after `timeoutMs`), idem, then a route that
 * counts its runs, awaits `work(run)` and answers 201 `{ run }`; or, with `own503`, answers
 * 503 itself at once (no timeout involved).
 */
async function start(
  leaseMs: number,
  timeoutMs: number,
  work: (run: number) => Promise<void>,
  own503 = false,
) {
  let runs = 0;
  let active = 0;
  let overlapped = false;
  const app = new Koa();
  app.silent = true;
  app.use(async (ctx, next) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        ctx.status = 503;
        ctx.body = 'timed out';
        resolve();
      }, timeoutMs);
    });
    await Promise.race([next(), timedOut]);
    clearTimeout(timer);
  });
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', leaseMs }));
  app.use(async (ctx) => {
    runs += 1;
    const run = runs;
    if (own503) {
      ctx.status = 503;
      ctx.body = { run };
      return;
    }
    active += 1;
    overlapped ||= active > 1;
    await work(run).finally(() => {
      active -= 1;
    });
    ctx.status = 201;
    ctx.body = { run };
  });
  const server = app.listen(0, '127.0.0.1');
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    runs: () => runs,
    overlapped: () => overlapped,
  };
}

async function post(port: number, key: string) {
  const response = await fetch(`http://127.0.0.1:${port}/charges`, {
    method: 'POST',
    headers: { 'idempotency-key': key },
    signal: AbortSignal.timeout(5_000),
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed'),
    body: await response.text(),
  };
}

describe('timeout31 koa: a timeout middleware outside idem answers 503 while the route runs', () => {
  it('retries after the 503 get 409 while the route runs; it never runs twice at once', async () => {
    const leaseMs = 300;
    let finish!: () => void;
    const working = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const server = await start(leaseMs, 100, (run) => (run === 1 ? working : Promise.resolve()));
    expect((await post(server.port, 'charge-1')).status).toBe(503);
    // Retries for three leases (the old source let the first one run the route again).
    const meanwhile: number[] = [];
    for (let i = 0; i < 6; i += 1) {
      meanwhile.push((await post(server.port, 'charge-1')).status);
      await sleep(leaseMs / 2);
    }
    expect(server.runs()).toBe(1);
    expect(meanwhile).toEqual([409, 409, 409, 409, 409, 409]);
    finish();
    let last = await post(server.port, 'charge-1');
    for (let i = 0; i < 100 && last.status === 409; i += 1) {
      await sleep(20);
      last = await post(server.port, 'charge-1');
    }
    // Released once the route settled (Koa drops its `ctx.status` once the 503 went out, so
    // its own outcome is not known): a retry then runs it again, never beside the first.
    expect(last.status).toBe(201);
    expect(server.overlapped()).toBe(false);
  });

  it("the route's own 503 (no timeout, nothing running) still releases the key", async () => {
    const server = await start(300, 5_000, () => Promise.resolve(), true);
    expect(await post(server.port, 'own-1')).toEqual({
      status: 503,
      replayed: null,
      body: '{"run":1}',
    });
    expect(await post(server.port, 'own-1')).toEqual({
      status: 503,
      replayed: null,
      body: '{"run":2}',
    });
    expect(server.runs()).toBe(2);
  });
});
