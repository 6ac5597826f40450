import { json, listening, type RunningApp, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Router from '@koa/router';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Two @koa/router routers told apart by their `host` option serve the same path: a key taken
// on one host's route was replayed, answer and all, to the other host's route (same principal).
describe('@idem/koa: routes of routers with a host option are operations of their own', () => {
  let app: RunningApp;
  const runs: string[] = [];
  beforeAll(async () => {
    const koa = new Koa();
    const idem = idempotency({
      store: createMemoryStore(),
      scope: () => ({ principal: 'user-1' }),
      onWarning: () => {},
    });
    for (const host of ['a.example', 'b.example']) {
      const router = new Router({ host });
      router.post('/charges', idem, (ctx) => {
        runs.push(host);
        ctx.status = 201;
        ctx.body = { served: host };
      });
      koa.use(router.routes());
    }
    app = await listening(koa.listen(0, '127.0.0.1'));
  });
  afterAll(() => app.close());

  const post = (host: string) =>
    send(app.url, '/charges', { key: 'k', body: {}, headers: { host } });

  it("never replays one host's route answer to another host's route", async () => {
    const a = await post('a.example');
    const b = await post('b.example');
    expect([a.status, a.headers['idempotent-replayed'], json(a)]).toEqual([
      201,
      undefined,
      { served: 'a.example' },
    ]);
    expect([b.status, b.headers['idempotent-replayed'], json(b)]).toEqual([
      201,
      undefined,
      { served: 'b.example' },
    ]);
    // Each host's own retry is replayed.
    const again = await post('a.example');
    expect([again.headers['idempotent-replayed'], json(again)]).toEqual([
      'true',
      { served: 'a.example' },
    ]);
    expect(runs).toEqual(['a.example', 'b.example']);
  });
});
