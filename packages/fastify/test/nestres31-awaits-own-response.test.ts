import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import { silentAfterLeaving } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// nestres31 FINDING (MEDIUM, bounded time; fixed in @idem/http's node response recorder, as
// for @idem/nestjs): an async route that awaits its own response (`await finished(reply.raw)`
// or `await once(reply.raw, 'close')` after `reply.hijack()`) is held by the plugin
// (its promise goes to the recorder's `holdWhile`). Once its client left, the response's
// 'close' is held back so that what the route still writes is recorded: the route waited for
// that very event, which came only once the lease was lost, so its key was held up to
// maxHoldMs (409 to every retry) where a silent body whose client left frees it within two
// leases. Now the held 'close' goes to the route's listeners once the body was silent for a
// lease, and the key is freed once the route settled. A stream piped into the response is held
// as before (rev30c: its silence cannot be told from a route still feeding it).

const LEASE = 300;

describe('nestres31 fastify: a hijacked route awaiting its own response, client gone', () => {
  const closers: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const close of closers) await close();
  });

  for (const style of ['finished', 'close'] as const) {
    it(`${style}: the key is freed within a few leases, not at maxHoldMs`, async () => {
      let runs = 0;
      const app = Fastify({ forceCloseConnections: true });
      await app.register(idempotency, {
        store: createMemoryStore(),
        scope: 'global',
        leaseMs: LEASE,
        maxHoldMs: 60_000,
      });
      app.post('/s', async (_request, reply) => {
        runs += 1;
        reply.hijack();
        reply.raw.writeHead(200, { 'content-type': 'text/plain' });
        reply.raw.write(`begun ${runs}.`);
        if (style === 'close') await once(reply.raw, 'close');
        else await finished(reply.raw);
      });
      const url = await app.listen({ port: 0, host: '127.0.0.1' });
      closers.push(() => app.close());
      const statuses = await silentAfterLeaving(
        url,
        '/s',
        `nestres31-${style}-${process.pid}`,
        LEASE,
        () => runs,
      );
      expect(statuses.at(-1)).toBe(200);
      expect(runs).toBe(2);
    });
  }
});
