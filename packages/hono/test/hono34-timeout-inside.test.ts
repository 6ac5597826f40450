import type { ServerType } from '@hono/node-server';
import { PROBLEM } from '@idem/http-conformance';
import { Hono } from 'hono';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency, timeout } from '../src/index.js';
import { keyOf, memoryOptions, poster, settled, TRANSPORTS } from './rev33b-support.js';

// hono34: rev32d's limit (`hono/timeout` mounted after idempotency() answers 504 while the handler
// runs, and nothing of the handler's end reaches idem: released, a retry ran it beside the first)
// holds with @idem/hono's `timeout()`, which hands the overtaken handler to idem: the key stays held
// until it settled (409), then the marker (ran to its end) or released (threw); never beside it.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

/**
 * A promise and its resolve, its waiter let go in a later turn of the event loop (as I/O ends):
 * off @hono/node-server everything here runs in microtasks, and a handler that settled within
 * the turn its response ended in is taken for the one that answered it (`holdWhile`).
 */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => {
    open = () => setImmediate(resolve);
  });
  return { opened, open };
}

function appWith(route: (runs: number) => Promise<Response | undefined>) {
  const counts = { runs: 0, running: 0, overlap: 0 };
  const app = new Hono();
  app.use(idempotency(memoryOptions()));
  app.use(timeout(50));
  app.post('/charges', async (c) => {
    counts.runs += 1;
    counts.running += 1;
    if (counts.running > 1) counts.overlap += 1;
    try {
      return (await route(counts.runs)) ?? c.json({ run: counts.runs }, 201);
    } finally {
      counts.running -= 1;
    }
  });
  return { app, counts };
}

describe('hono34 hono: @idem/hono timeout() mounted after idempotency()', () => {
  for (const transport of TRANSPORTS) {
    it(`${transport}, the handler overtaken runs to its end: held (409), then the marker; one run`, async () => {
      const slow = gate();
      const { app, counts } = appWith(async (run) => {
        if (run === 1) await slow.opened;
        return undefined;
      });
      const post = await poster(transport, app, servers);
      const key = keyOf('inside');
      expect((await post(key)).status).toBe(504);
      expect((await post(key)).status).toBe(409);
      slow.open();
      const last = await settled(post, key);
      expect([last.status, last.type]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect([counts.runs, counts.overlap]).toEqual([1, 0]);
    });

    it(`${transport}, the handler overtaken then throws: held (409), then released; never beside it`, async () => {
      const slow = gate();
      const { app, counts } = appWith(async (run) => {
        if (run === 1) {
          await slow.opened;
          throw new Error('card declined');
        }
        return undefined;
      });
      const post = await poster(transport, app, servers);
      const key = keyOf('inside-throw');
      expect((await post(key)).status).toBe(504);
      expect((await post(key)).status).toBe(409);
      slow.open();
      const last = await settled(post, key);
      expect(last.status).toBe(201);
      expect([counts.runs, counts.overlap]).toEqual([2, 0]);
    });

    it(`${transport}, a handler within the timeout: recorded and replayed`, async () => {
      const { app, counts } = appWith(async () => undefined);
      const post = await poster(transport, app, servers);
      const key = keyOf('inside-fast');
      expect((await post(key)).status).toBe(201);
      const again = await post(key);
      expect([again.status, again.replayed, again.body]).toEqual([201, 'true', '{"run":1}']);
      expect(counts.runs).toBe(1);
    });
  }
});
