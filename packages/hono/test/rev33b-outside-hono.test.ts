import type { ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import {
  keyOf,
  memoryOptions,
  poster,
  settled,
  slowCharges,
  TRANSPORTS,
  type Transport,
} from './rev33b-support.js';

// rev33b: `hono/timeout` in a parent app, idem in a Hono app mounted under it with `app.mount()`
// (its own `Context`): the timeout answers on the parent's context, never on idem's.

const servers: ServerType[] = [];
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
});

async function mounted(transport: Transport, counts: { runs: number }) {
  const sub = new Hono();
  sub.use(idempotency(memoryOptions()));
  slowCharges(sub, counts);
  const parent = new Hono();
  parent.use(timeout(100));
  parent.mount('/api', sub.fetch);
  return poster(transport, parent, servers, {}, '/api/charges');
}

describe('rev33b hono: a timeout in a parent app, idem in an app mounted under it', () => {
  // The mounted app's own chain is not cut by the parent's timeout: its route's 201 lands on the
  // mounted app's context, is recorded, and the retries get its replay (the first client got the
  // parent's 504). Held meanwhile; one run.
  for (const transport of TRANSPORTS) {
    it(`${transport}: held, then the replay of the route's 201; one run`, async () => {
      const counts = { runs: 0 };
      const post = await mounted(transport, counts);
      const key = keyOf('mounted');
      expect((await post(key)).status).toBe(504);
      expect((await post(key)).status).toBe(409);
      const last = await settled(post, key);
      expect([last.status, last.replayed, last.body]).toEqual([201, 'true', '{"runs":1}']);
      expect(counts.runs).toBe(1);
    });
  }
});
