import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev31c probe: a route that sends a web ReadableStream and keeps feeding it between slow calls
// (Fastify reads it and listens to the response's 'close' through `finished`, no `pipe`).

const LEASE = 300;
let runs = 0;
let gate: Promise<void> = Promise.resolve();
let gatedRun = 0;

describe('rev31c fastify: reply.send(web ReadableStream) fed by a route still working', () => {
  let url = '';
  const app = Fastify({ forceCloseConnections: true });
  beforeAll(async () => {
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      leaseMs: LEASE,
      maxHoldMs: 30_000,
    });
    app.post('/web', async (_request, reply) => {
      const run = ++runs;
      const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
      reply.type('text/plain').send(readable);
      const writer = writable.getWriter();
      const encoder = new TextEncoder();
      await writer.write(encoder.encode(`begun ${run}.`));
      if (run === gatedRun) await gate;
      await writer.write(encoder.encode('done'));
      await writer.close();
      return reply;
    });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(() => app.close());

  it('is held (409) and recorded once', async () => {
    const key = randomUUID();
    let release!: () => void;
    gate = new Promise((resolve) => {
      release = resolve;
    });
    const before = runs;
    gatedRun = before + 1;
    await send(url, '/web', { key, body: { a: 1 }, leaveAfterBytes: 3 }).catch(() => undefined);
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      await sleep(LEASE / 2);
      statuses.push((await send(url, '/web', { key, body: { a: 1 } })).status);
    }
    release();
    let last = await send(url, '/web', { key, body: { a: 1 } });
    for (let i = 0; i < 20 && last.status === 409; i++) {
      await sleep(LEASE / 4);
      last = await send(url, '/web', { key, body: { a: 1 } });
    }
    expect(runs, `retries got ${statuses.join(',')}`).toBe(before + 1);
    expect([last.status, last.body.toString()]).toEqual([200, `begun ${before + 1}.done`]);
  });
});
