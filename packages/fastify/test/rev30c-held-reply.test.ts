import { PassThrough } from 'node:stream';
import { leftBeforeHeadProbe, silentAfterLeaving } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev30c FINDING (MEDIUM, bounded time): the plugin held the key while the route's handler
// promise ran (leftearly30), but an async handler that answers with a stream and returns
// `reply` (Fastify's documented pattern: `reply.send(stream); return reply`) has a promise
// that adopts `reply.then`, which settles only once the Node response ends or closes; the
// plugin holds that response's 'close' until the stream ends. A stream that went silent after
// its client left then held the key until maxHoldMs (409 to every retry), where a silent body
// frees it within two leases. The hold now ends as the handler hands its payload to Fastify
// (reply.send), as it ends with its promise.

const LEASE = 300;

describe('rev30c fastify: a handler that returns reply after sending a stream that goes silent', () => {
  const closers: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const close of closers) await close();
  });

  for (const style of ['async, return reply', 'sync, return reply', 'sync, no return']) {
    it(`${style}: the client leaves after the head; the key is freed within a few leases, not at maxHoldMs`, async () => {
      let runs = 0;
      const streams: PassThrough[] = [];
      const app = Fastify({ forceCloseConnections: true });
      await app.register(idempotency, {
        store: createMemoryStore(),
        scope: 'global',
        leaseMs: LEASE,
        maxHoldMs: 60_000,
      });
      const answer = (reply: import('fastify').FastifyReply) => {
        runs += 1;
        const stream = new PassThrough();
        streams.push(stream);
        stream.write(`begun ${runs}.`);
        reply.header('content-type', 'text/plain').send(stream);
        return reply;
      };
      if (style === 'async, return reply') app.post('/s', async (_q, reply) => answer(reply));
      else if (style === 'sync, return reply') app.post('/s', (_q, reply) => answer(reply));
      else
        app.post('/s', (_q, reply) => {
          answer(reply);
        });
      const url = await app.listen({ port: 0, host: '127.0.0.1' });
      closers.push(async () => {
        for (const stream of streams) stream.destroy();
        await app.close();
      });
      const key = `rev30c-${style.replace(/\W+/g, '-')}-${process.pid}`;
      const statuses = await silentAfterLeaving(url, '/s', key, LEASE, () => runs);
      expect(statuses.at(-1)).toBe(200);
      expect(runs).toBe(2);
    });
  }
});

describe('rev30c fastify: a handler that sends a stream, then still works to feed it, then returns reply', () => {
  let close = async () => {};
  afterAll(() => close());
  it('its client leaves after the head: held while it works (409), then the replay; run once', async () => {
    const probe = leftBeforeHeadProbe(LEASE);
    const app = Fastify({ forceCloseConnections: true });
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      leaseMs: LEASE,
    });
    app.post('/fed', async (_request, reply) => {
      const run = probe.begin();
      const stream = new PassThrough();
      stream.write(`begun ${run}.`);
      reply.header('content-type', 'text/plain').send(stream);
      await probe.held(run);
      stream.end('done');
      return reply;
    });
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    close = () => app.close();
    await probe.checkAfterHead(url, '/fed');
  });
});
