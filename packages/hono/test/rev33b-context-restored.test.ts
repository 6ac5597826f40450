import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerType } from '@hono/node-server';
import { Hono, type MiddlewareHandler } from 'hono';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { keyOf, memoryOptions, poster, settled, TRANSPORTS } from './rev33b-support.js';

// rev33b: the watch idem puts on the context while `next()` runs (own accessors for `c.res` and
// `c.error`, a wrapped `c.header`) is taken off whatever happens, so nothing of it stays on a
// context, nor builds up, and code after idem's middleware sees Hono's own context again.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

interface Seen {
  ownRes: boolean;
  headerSame: boolean;
  errorPlain: boolean;
}

/** Mounted before idem: what it sees of the context once `next()` settled. */
function inspect(seen: Seen[]): MiddlewareHandler {
  return async (c, next) => {
    const header = c.header;
    try {
      await next();
    } finally {
      const error = Object.getOwnPropertyDescriptor(c, 'error');
      seen.push({
        ownRes: Object.hasOwn(c, 'res'),
        headerSame: c.header === header,
        errorPlain: error === undefined || 'value' in error,
      });
    }
  };
}

const clean: Seen = { ownRes: false, headerSame: true, errorPlain: true };

describe("rev33b hono: the context after idem is Hono's own again", () => {
  for (const transport of TRANSPORTS) {
    it(`${transport}: after a first run, a replay, a throw, a 409 and two nested instances`, async () => {
      const seen: Seen[] = [];
      const app = new Hono();
      app.use(inspect(seen));
      app.use(idempotency(memoryOptions()));
      app.use(idempotency(memoryOptions()));
      // The first run waits on a gate opened once the duplicate was answered (no race with a
      // loaded machine: a sleep let the first end before the duplicate arrived).
      let open = () => {};
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      let started = () => {};
      const running = new Promise<void>((resolve) => {
        started = resolve;
      });
      app.post('/charges', async (c) => {
        if (c.req.header('x-throw')) throw new Error('boom');
        started();
        await gate;
        return c.json({ ok: true }, 201);
      });
      const post = await poster(transport, app, servers);
      const throwing = await poster(transport, app, servers, { 'x-throw': '1' });
      const key = keyOf('restored');
      const firstAnswer = post(key);
      await running;
      const busy = await post(key);
      open();
      const first = await firstAnswer;
      expect([first.status, busy.status]).toEqual([201, 409]);
      expect((await post(key)).replayed).toBe('true');
      expect((await throwing(keyOf('throws'))).status).toBe(500);
      expect(seen).toEqual([clean, clean, clean, clean]);
    });

    it(`${transport}: after an overtaken handler ends (the marker), nothing stays on its context`, async () => {
      const contexts: object[] = [];
      const app = new Hono();
      app.use(timeout(100));
      app.use(idempotency(memoryOptions()));
      app.post('/charges', async (c) => {
        contexts.push(c);
        await sleep(300);
        return c.json({ ok: true }, 201);
      });
      const post = await poster(transport, app, servers);
      const key = keyOf('overtaken');
      expect((await post(key)).status).toBe(504);
      expect((await settled(post, key)).status).toBe(500);
      expect(contexts).toHaveLength(1);
      const c = contexts[0] as { header: unknown };
      expect(Object.hasOwn(c, 'res')).toBe(false);
      expect('value' in (Object.getOwnPropertyDescriptor(c, 'error') ?? { value: 1 })).toBe(true);
      expect(Object.getOwnPropertyDescriptor(c, 'header')?.value).toBeTypeOf('function');
    });
  }
});
