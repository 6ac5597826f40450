import { EventEmitter } from 'node:events';
import { PROBLEM } from '@idem/http-conformance';
import { Hono, type MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { returningTimeout } from './outside-answer-support.js';
import { keyOf, memoryOptions, settled, viaFetch } from './rev33b-support.js';

// rev34h: hono34's same-turn heuristic off @hono/node-server (app.fetch): a route run after idem
// from a callback with no async context puts its answer on `c.res` as the chain before idem
// does, and compose's drop of a `Response` read there is not seen either (it reads from no
// context: `outside()`). A route a timeout before idem overtook that then ran to its end within
// that turn of the event loop (its I/O ended right after the timer, in microtasks or in the same
// loop iteration) was taken for the route's own answer: the timeout's 504 judged by the policy,
// released under finalOn2xx, and a retry ran the route a second time (main: the marker).

/** A gate ticked from a timer made at load, outside any request (no async context). */
const bus = new EventEmitter();
bus.setMaxListeners(50);
const ticker = setInterval(() => bus.emit('ready'), 5).unref();
afterAll(() => clearInterval(ticker));
const contextless: MiddlewareHandler = async (_c, next) => {
  await new Promise<void>((resolve, reject) => {
    bus.once('ready', () => next().then(resolve, reject));
  });
};

function appWith(later: (open: () => void) => void) {
  const counts = { runs: 0 };
  let open!: () => void;
  const overtaken = new Promise<void>((resolve) => {
    open = resolve;
  });
  const app = new Hono();
  app.use(
    timeout(40, () => {
      later(open);
      return new HTTPException(504, { message: 'Gateway Timeout' });
    }),
  );
  app.use(idempotency(memoryOptions()));
  app.use(contextless);
  app.post('/charges', async (c) => {
    counts.runs += 1;
    if (counts.runs === 1) await overtaken;
    return c.json({ run: counts.runs }, 201);
  });
  return { app, counts };
}

describe('rev34h hono: context-less route overtaken by a timeout before idem, ends in its turn', () => {
  for (const [name, later] of [
    ['in microtasks of the timeout', (open: () => void) => open()],
    ['in the same loop iteration (setImmediate)', (open: () => void) => setImmediate(open)],
  ] as const) {
    it(`app.fetch directly, ${name}: the marker, one run`, async () => {
      const { app, counts } = appWith(later);
      const post = viaFetch(app);
      const key = keyOf('contextless-turn');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      expect([last.status, last.type, counts.runs]).toEqual([500, PROBLEM.outcomeNotRecorded, 1]);
    });
  }

  // A timeout before idem that returns its answer (no throw, no `c.error`), the route's I/O done
  // in a timer right after the timeout's.
  it('app.fetch directly, a returning timeout before idem, the route ends in its microtasks: the marker, one run', async () => {
    let runs = 0;
    let open!: () => void;
    const overtaken = new Promise<void>((resolve) => {
      open = resolve;
    });
    const app = new Hono();
    app.use(returningTimeout(40));
    // The route's I/O ends right after the timeout's timer (made after it, same delay).
    app.use(async (_c, next) => {
      setTimeout(() => open(), 40);
      await next();
    });
    app.use(idempotency(memoryOptions()));
    app.use(contextless);
    app.post('/charges', async (c) => {
      runs += 1;
      if (runs === 1) await overtaken;
      return c.json({ run: runs }, 201);
    });
    const post = viaFetch(app);
    const key = keyOf('contextless-returning');
    expect((await post(key)).status).toBe(503);
    const last = await settled(post, key);
    expect([last.status, last.type, runs]).toEqual([500, PROBLEM.outcomeNotRecorded, 1]);
  });
});
