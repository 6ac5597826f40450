import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { finished, pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev31c review of nestres31: Koa holds the route's `next()` (the recorder's `holdWhile`) and so
// goes through the held-silent path, untested for Koa until now. A route writing its own
// response (`ctx.respond = false`) that awaits it is freed within a few leases; one still
// working, with a 'close' listener of its own or feeding a `pipeline` from an async generator,
// is held and recorded once.

const LEASE = 300;
let runs = 0;
let gate: Promise<void> = Promise.resolve();
let gatedRun = 0;

const written = (res: ServerResponse, chunk: string) =>
  new Promise<void>((resolve, reject) =>
    res.write(chunk, (error) => (error ? reject(error) : resolve())),
  );

describe('rev31c koa: a route held while it runs, its client gone mid-body', () => {
  let url = '';
  let close = async () => {};
  beforeAll(async () => {
    const app = new Koa();
    app.silent = true;
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        leaseMs: LEASE,
        maxHoldMs: 30_000,
      }),
    );
    app.use(async (ctx) => {
      ctx.respond = false;
      const res = ctx.res;
      const run = ++runs;
      res.writeHead(200, { 'content-type': 'text/plain' });
      if (ctx.path === '/finished') {
        res.write('begun.');
        await finished(res);
        return;
      }
      if (ctx.path === '/generator') {
        await pipeline(async function* () {
          yield `begun ${run}.`;
          if (run === gatedRun) await gate;
          yield 'done';
        }, res);
        return;
      }
      res.on('close', () => {});
      await written(res, `begun ${run}.`);
      if (run === gatedRun) await gate;
      await written(res, 'more.');
      res.end('done');
    });
    ({ url, close } = await listening(app.listen(0, '127.0.0.1')));
  });
  afterAll(() => close());

  it.each([
    ['/working', 'more.done'],
    ['/generator', 'done'],
  ])('%s: a route still working is held (409) and recorded once', async (path, end) => {
    const key = randomUUID();
    let release!: () => void;
    gate = new Promise((resolve) => {
      release = resolve;
    });
    const before = runs;
    gatedRun = before + 1;
    await send(url, path, { key, body: { a: 1 }, leaveAfterBytes: 3 }).catch(() => undefined);
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      await sleep(LEASE / 2);
      statuses.push((await send(url, path, { key, body: { a: 1 } })).status);
    }
    release();
    let last = await send(url, path, { key, body: { a: 1 } });
    for (let i = 0; i < 20 && last.status === 409; i++) {
      await sleep(LEASE / 4);
      last = await send(url, path, { key, body: { a: 1 } });
    }
    expect(runs, `retries got ${statuses.join(',')}`).toBe(before + 1);
    expect([last.status, last.headers['idempotent-replayed'], last.body.toString()]).toEqual([
      200,
      'true',
      `begun ${before + 1}.${end}`,
    ]);
  });
});
