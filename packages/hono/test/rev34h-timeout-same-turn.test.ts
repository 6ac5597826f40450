import type { ServerType } from '@hono/node-server';
import { PROBLEM } from '@idem/http-conformance';
import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency, timeout } from '../src/index.js';
import { keyOf, memoryOptions, poster, settled, TRANSPORTS } from './rev33b-support.js';

// rev34h: @idem/hono's timeout() mounted after idempotency() hands the overtaken handler to the
// recorder's holdWhile, whose rule "settled within the turn the response ended in: its own
// answer, released" is for adapters whose handler writes the response itself. Under timeout()
// the answer that ended is always the timeout's 504 (Hono's compose drops the handler's
// Response), so a handler that ran to its end right after the timeout (its I/O finished in the
// same turn of the event loop, or before the 504 was even recorded) was released: a retry ran it
// a second time.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

function appWith(exception: (c: unknown, open: () => void) => HTTPException, nested = false) {
  const counts = { runs: 0 };
  let open!: () => void;
  const overtaken = new Promise<void>((resolve) => {
    open = resolve;
  });
  const app = new Hono();
  app.use(idempotency(memoryOptions()));
  app.use(timeout(30, (c) => exception(c, open)));
  // An instance nested after the timeout (its own store) puts its recorder on the context later.
  if (nested) app.use(idempotency(memoryOptions()));
  app.post('/charges', async (c) => {
    counts.runs += 1;
    // The side effect happened; the handler finishes its bookkeeping as the timeout fires.
    if (counts.runs === 1) await overtaken;
    return c.json({ run: counts.runs }, 201);
  });
  return { app, counts };
}

describe('rev34h hono: timeout() after idempotency(), the overtaken handler ends in the timeout turn', () => {
  for (const transport of TRANSPORTS) {
    it(`${transport}, ends in microtasks of the timeout: the marker, one run`, async () => {
      const { app, counts } = appWith((_c, open) => {
        open();
        return new HTTPException(504, { message: 'Gateway Timeout' });
      });
      const post = await poster(transport, app, servers);
      const key = keyOf('same-turn');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect(counts.runs).toBe(1);
    });

    it(`${transport}, ends in a later phase of the same loop iteration (setImmediate): the marker, one run`, async () => {
      const { app, counts } = appWith((_c, open) => {
        setImmediate(open);
        return new HTTPException(504, { message: 'Gateway Timeout' });
      });
      const post = await poster(transport, app, servers);
      const key = keyOf('same-iteration');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect(counts.runs).toBe(1);
    });

    it(`${transport}, an idempotency() nested after timeout(), ends in microtasks: the marker, one run`, async () => {
      const { app, counts } = appWith((_c, open) => {
        open();
        return new HTTPException(504, { message: 'Gateway Timeout' });
      }, true);
      const post = await poster(transport, app, servers);
      const key = keyOf('same-turn-nested');
      expect((await post(key)).status).toBe(504);
      const last = await settled(post, key);
      expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect(counts.runs).toBe(1);
    });
  }
});
