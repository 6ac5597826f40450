import { connect } from 'node:net';
import { PassThrough } from 'node:stream';
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
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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
      const { port } = new URL(url);
      const key = `rev30c-${style.replace(/\W+/g, '-')}-${process.pid}`;
      // A keyed POST on a connection of its own: the status of its head, then it leaves.
      const postAndLeave = async () => {
        const body = '{"a":1}';
        const socket = connect(Number(port), '127.0.0.1');
        socket.on('error', () => {});
        const head = new Promise<string>((resolve) =>
          socket.once('data', (data: Buffer) => resolve(data.toString('latin1'))),
        );
        socket.write(
          `POST /s HTTP/1.1\r\nHost: x\r\nIdempotency-Key: ${key}\r\n` +
            `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
        );
        const status = Number((await head).slice(9, 12));
        socket.destroy();
        return status;
      };
      expect(await postAndLeave()).toBe(200);
      // Silent after the client left: freed within two leases. Retried every half lease for
      // twelve leases (maxHoldMs is a minute): a retry must get past 409 and run the route.
      const statuses: number[] = [];
      for (let i = 0; i < 24 && runs === 1; i += 1) {
        await sleep(LEASE / 2);
        statuses.push(await postAndLeave());
      }
      expect(statuses.at(-1)).toBe(200);
      expect(runs).toBe(2);
    });
  }
});
