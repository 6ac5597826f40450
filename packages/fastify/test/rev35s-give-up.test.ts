import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev35s: the give-up past maxOutcomeBytes (a final response whose client left is let go at
// once with the not-recorded marker) on Fastify, which shares recordServerResponse with Koa.

const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});
const A = { a: 1 };
const CHUNK = `data: ${'x'.repeat(1000)}\n\n`;

/** A Fastify app: /raw writes `status` then chunks by reply.raw (hijacked), /readable sends an endless Readable; `limit` chunks then the end. */
async function streaming(status: number, limit = 3_000) {
  let runs = 0;
  const closed: boolean[] = [];
  const app = Fastify({ forceCloseConnections: true });
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: 'global',
    leaseMs: 300,
    maxOutcomeBytes: 16_384,
    onWarning: () => {},
  });
  app.post('/raw', async (_q, reply) => {
    const run = ++runs;
    closed[run] = false;
    reply.hijack();
    reply.raw.writeHead(status, { 'content-type': 'text/event-stream' });
    let written = 0;
    const timer = setInterval(() => {
      reply.raw.write(CHUNK);
      written++;
      if (written >= limit) {
        clearInterval(timer);
        reply.raw.end();
      }
    }, 2);
    reply.raw.on('close', () => {
      closed[run] = true;
      clearInterval(timer);
    });
  });
  app.post('/readable', async (_q, reply) => {
    const run = ++runs;
    closed[run] = false;
    const body = Readable.from(
      (async function* () {
        try {
          for (let i = 0; i < limit; i++) {
            await sleep(2);
            yield CHUNK;
          }
        } finally {
          closed[run] = true;
        }
      })(),
    );
    return reply.code(status).type('text/event-stream').send(body);
  });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(() => app.close());
  return { url, runs: () => runs, closed };
}

async function retryPast409(url: string, path: string, key: string, leaveAfterBytes?: number) {
  const retry = () =>
    send(url, path, { key, body: A, timeoutMs: 500, leaveAfterBytes }).catch(() => undefined);
  let answer = await retry();
  for (let i = 0; i < 20 && answer?.status === 409; i++) {
    await sleep(100);
    answer = await retry();
  }
  return answer;
}

async function leaveAfter(url: string, path: string, bytes: number, closed: boolean[]) {
  const key = randomUUID();
  await send(url, path, { key, body: A, leaveAfterBytes: bytes }).catch(() => undefined);
  for (let i = 0; i < 40 && !closed[1]; i++) await sleep(50);
  expect(closed[1]).toBe(true);
  return key;
}

describe('rev35s fastify: past the outcome cap, its client gone', () => {
  for (const path of ['/raw', '/readable']) {
    it(`${path}: an endless 200 stream left past the cap: let go, the retry gets the not-recorded problem, one run`, async () => {
      const { url, runs, closed } = await streaming(200);
      const key = await leaveAfter(url, path, 20_000, closed);
      const answer = await retryPast409(url, path, key);
      expect(answer?.status).toBe(500);
      expect(JSON.parse(String(answer?.body)).type).toMatch(/outcome-not-recorded/);
      expect(runs()).toBe(1);
    });

    it(`${path}: a non-final 503 stream past the cap: released after its end, never marked (a retry runs)`, async () => {
      const { url, runs, closed } = await streaming(503);
      const key = await leaveAfter(url, path, 20_000, closed);
      expect((await retryPast409(url, path, key, 100))?.status).toBe(503);
      expect(runs()).toBe(2);
    });
  }

  it('/raw: the stream ends just past the cap, its client gone before the end: one run, never a second', async () => {
    // 17 chunks (> 16 KiB): the client leaves after 16 KiB, the end follows within a few writes.
    const { url, runs } = await streaming(200, 17);
    const key = randomUUID();
    await send(url, '/raw', { key, body: A, leaveAfterBytes: 16_500 }).catch(() => undefined);
    await sleep(200);
    const answer = await retryPast409(url, '/raw', key);
    expect(answer?.status).not.toBe(200);
    expect(runs()).toBe(1);
  });
});
