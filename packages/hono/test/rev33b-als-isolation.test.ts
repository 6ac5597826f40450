import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { Hono, type MiddlewareHandler } from 'hono';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { keyOf, memoryOptions, poster, settled, TRANSPORTS } from './rev33b-support.js';

// rev33b: the AsyncLocalStorage that tells, off @hono/node-server, an answer put on `c.res` from
// outside idem's `next()`. Code after idem that runs the rest of the chain from a callback of
// its own (a callback-style concurrency limiter: the next waiter's `next()` is called when the
// previous request releases, so in that request's async context, or an EventEmitter's) runs the
// route outside the async context of its own request's `next()`.
// rev33b FINDING (MEDIUM, answer lost in an app with no timeout, fixed): off @hono/node-server the
// route's own 201 put on `c.res` from another request's async context was taken for an outside
// answer (a timeout's): not recorded, the `answered_outside` marker, and retries got the 500
// `outcome-not-recorded` problem instead of the replay. Now only an answer put there from the
// context idem was called in (or one enclosing it) counts as outside.

const servers: ServerType[] = [];
const tickers: NodeJS.Timeout[] = [];
afterAll(() => {
  for (const ticker of tickers) clearInterval(ticker);
});
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

/** One at a time; a waiter's `next()` called by the release of the one before it. */
function callbackLimiter(): MiddlewareHandler {
  let busy = false;
  const waiters: (() => void)[] = [];
  const release = () => {
    const waiter = waiters.shift();
    if (waiter) waiter();
    else busy = false;
  };
  return (_c, next) =>
    new Promise<void>((resolve, reject) => {
      const go = () => {
        next().then(
          () => {
            release();
            resolve();
          },
          (error) => {
            release();
            reject(error);
          },
        );
      };
      if (busy) waiters.push(go);
      else {
        busy = true;
        go();
      }
    });
}

/** Runs the rest of the chain on an event emitted by a shared emitter (a job queue's 'ready'). */
function emitterGate(): MiddlewareHandler {
  const bus = new EventEmitter();
  // Ticked from a timer made once, by the first request (in its async context).
  let ticker: NodeJS.Timeout | undefined;
  return async (_c, next) => {
    if (!ticker) {
      ticker = setInterval(() => bus.emit('ready'), 5).unref();
      tickers.push(ticker);
    }
    await new Promise<void>((resolve, reject) => {
      bus.once('ready', () => next().then(resolve, reject));
    });
  };
}

/** Like {@link emitterGate}, its emitter ticked by a timer made outside any request (at load). */
const sharedBus = new EventEmitter();
sharedBus.setMaxListeners(50);
let sharedTicker: NodeJS.Timeout | undefined;
function startSharedTicker() {
  sharedTicker ??= setInterval(() => sharedBus.emit('ready'), 5).unref();
}
startSharedTicker();
afterAll(() => clearInterval(sharedTicker));
const sharedGate: MiddlewareHandler = async (_c, next) => {
  await new Promise<void>((resolve, reject) => {
    sharedBus.once('ready', () => next().then(resolve, reject));
  });
};

describe('rev33b hono: the async context of next() off @hono/node-server', () => {
  // rev33b FINDING (MEDIUM, answer lost, fixed in hono34): off @hono/node-server, a route that
  // code after idem runs from a callback with no async context at all (an emitter ticked by a
  // timer made at load, outside any request) puts its answer on `c.res` from where the chain
  // before idem runs: it was taken for an outside answer (a timeout's), the route's own 201 went
  // out but was not recorded, and retries got the 500 `outcome-not-recorded` problem instead of
  // the replay (never a second run). AsyncLocalStorage alone cannot tell the two apart; now the
  // end of `next()` within the same turn of the event loop, nothing dropped by compose meanwhile,
  // tells the route's own answer (a handler a timeout overtook runs on past it).
  it('app.fetch directly, a gate after idem run from a context-less timer: recorded and replayed', async () => {
    let runs = 0;
    const app = new Hono();
    app.use(idempotency(memoryOptions()));
    app.use(sharedGate);
    app.post('/charges', async (c) => {
      runs += 1;
      return c.json({ runs }, 201);
    });
    const post = await poster('app.fetch directly', app, servers);
    const key = keyOf('contextless');
    expect((await post(key)).status).toBe(201);
    const again = await post(key);
    expect([again.status, again.replayed]).toEqual([201, 'true']);
    expect(runs).toBe(1);
  });

  // hono34: the same gate, a timeout before idem overtaking the route: still the marker (the
  // route ends turns after the timeout's answer), one run.
  it('app.fetch directly, a gate after idem run from a context-less timer, a timeout before idem: held, then the marker; one run', async () => {
    let runs = 0;
    const app = new Hono();
    app.use(timeout(100));
    app.use(idempotency(memoryOptions()));
    app.use(sharedGate);
    app.post('/charges', async (c) => {
      runs += 1;
      await sleep(300);
      return c.json({ runs }, 201);
    });
    const post = await poster('app.fetch directly', app, servers);
    const key = keyOf('contextless-timeout');
    expect((await post(key)).status).toBe(504);
    const last = await settled(post, key);
    expect(last.status).toBe(500);
    expect(runs).toBe(1);
  });

  for (const transport of TRANSPORTS) {
    for (const [name, gate] of [
      ['a callback-style limiter after idem', callbackLimiter],
      ['an EventEmitter gate after idem', emitterGate],
    ] as const) {
      it(`${transport}, ${name}, no timeout: every answer recorded and replayed, one run each`, async () => {
        const runs = new Map<string, number>();
        const app = new Hono();
        app.use(idempotency(memoryOptions()));
        app.use(gate());
        app.post('/charges', async (c) => {
          const key = c.req.header('idempotency-key') ?? '';
          runs.set(key, (runs.get(key) ?? 0) + 1);
          await sleep(30);
          return c.json({ key }, 201);
        });
        const post = await poster(transport, app, servers);
        const keys = [0, 1, 2].map(() => keyOf('gate'));
        const firsts = await Promise.all(keys.map((key) => post(key)));
        expect(firsts.map((a) => a.status)).toEqual([201, 201, 201]);
        const agains = await Promise.all(keys.map((key) => post(key)));
        expect(agains.map((a) => [a.status, a.replayed, a.type])).toEqual(
          keys.map(() => [201, 'true', undefined]),
        );
        expect(agains.map((a) => JSON.parse(a.body).key)).toEqual(keys);
        expect(keys.map((key) => runs.get(key))).toEqual([1, 1, 1]);
      });
    }
  }

  for (const transport of TRANSPORTS) {
    it(`${transport}, same key sent 4 times at once under a timeout before idem: one run, the rest 409, then the marker`, async () => {
      let runs = 0;
      const app = new Hono();
      app.use(timeout(100));
      app.use(idempotency(memoryOptions()));
      app.post('/charges', async (c) => {
        runs += 1;
        await sleep(300);
        return c.json({ runs }, 201);
      });
      const post = await poster(transport, app, servers);
      const key = keyOf('same');
      const all = await Promise.all([0, 1, 2, 3].map(() => post(key)));
      expect(all.map((a) => a.status).sort()).toEqual([409, 409, 409, 504]);
      const last = await settled(post, key);
      expect(last.status).toBe(500);
      expect(runs).toBe(1);
    });

    it(`${transport}, two keys interleaving, one overtaken by the timeout, one fast: each judged on its own`, async () => {
      const runs = new Map<string, number>();
      const app = new Hono();
      app.use(timeout(100));
      app.use(idempotency(memoryOptions()));
      app.post('/charges', async (c) => {
        const key = c.req.header('idempotency-key') ?? '';
        runs.set(key, (runs.get(key) ?? 0) + 1);
        await sleep(key.includes('slow') ? 300 : 150 - 100);
        return c.json({ key }, 201);
      });
      const post = await poster(transport, app, servers);
      const slow = keyOf('slow');
      const fasts = [0, 1, 2, 3].map(() => keyOf('fast'));
      const [first, ...others] = await Promise.all([
        post(slow),
        ...fasts.map(async (key, i) => {
          await sleep(30 * i);
          return post(key);
        }),
      ]);
      expect(first?.status).toBe(504);
      expect(others.map((a) => a.status)).toEqual([201, 201, 201, 201]);
      const replays = await Promise.all(fasts.map((key) => post(key)));
      expect(replays.map((a) => [a.status, a.replayed])).toEqual(fasts.map(() => [201, 'true']));
      const last = await settled(post, slow);
      expect(last.status).toBe(500);
      expect([slow, ...fasts].map((key) => runs.get(key))).toEqual([1, 1, 1, 1, 1]);
    });
  }
});
