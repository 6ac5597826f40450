import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { listening, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev35r: rev35k's give-up (a final response past maxOutcomeBytes whose client left is let go
// with the not-recorded marker) on Express, which shares recordServerResponse with Koa.

const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});
const A = { a: 1 };
const CHUNK = `data: ${'x'.repeat(1000)}\n\n`;

/** An Express app whose /s route writes `status` then chunks (every 2 ms while `writing()`), until its 'close'. */
async function streaming(status: number, writing: (run: number, written: number) => boolean) {
  let runs = 0;
  const closed: boolean[] = [];
  const app = express();
  app.use(
    idempotency({
      store: createMemoryStore(),
      scope: 'global',
      leaseMs: 300,
      maxOutcomeBytes: 16_384,
      onWarning: () => {},
    }),
  );
  app.post('/s', (_req, res) => {
    const run = ++runs;
    closed[run] = false;
    res.writeHead(status, { 'content-type': 'text/event-stream' });
    let written = 0;
    const timer = setInterval(() => {
      if (writing(run, written)) {
        res.write(CHUNK);
        written++;
      }
      if (written > 3_000) {
        clearInterval(timer);
        res.end();
      }
    }, 2);
    res.on('close', () => {
      closed[run] = true;
      clearInterval(timer);
    });
  });
  const server: Server = app.listen(0, '127.0.0.1');
  const running = await listening(server);
  closers.push(running.close);
  return { url: running.url, runs: () => runs, closed };
}

/** Sends the retry again while it is answered 409 (20 times at most, 100 ms apart). */
async function retryPast409(url: string, key: string, leaveAfterBytes?: number) {
  const retry = () =>
    send(url, '/s', { key, body: A, timeoutMs: 500, leaveAfterBytes }).catch(() => undefined);
  let answer = await retry();
  for (let i = 0; i < 20 && answer?.status === 409; i++) {
    await sleep(100);
    answer = await retry();
  }
  return answer;
}

/** A keyed client that leaves after `bytes`; waits (2 s at most) for the first run's 'close'. */
async function leaveAfter(url: string, bytes: number, closed: boolean[]) {
  const key = randomUUID();
  await send(url, '/s', { key, body: A, leaveAfterBytes: bytes }).catch(() => undefined);
  for (let i = 0; i < 40 && !closed[1]; i++) await sleep(50);
  expect(closed[1]).toBe(true);
  return key;
}

describe('rev35r express: past the outcome cap, its client gone', () => {
  it('an endless 200 stream: its close reaches the app, the retry gets the not-recorded problem, one run', async () => {
    const { url, runs, closed } = await streaming(200, () => true);
    const key = await leaveAfter(url, 2_000, closed);
    const answer = await retryPast409(url, key);
    expect(answer?.status).toBe(500);
    expect(JSON.parse(String(answer?.body)).type).toMatch(/outcome-not-recorded/);
    expect(runs()).toBe(1);
  });

  it('a non-final 503 stream past the cap: let go as before, released (a retry runs), never marked', async () => {
    const { url, runs, closed } = await streaming(503, () => true);
    const key = await leaveAfter(url, 20_000, closed);
    expect((await retryPast409(url, key, 100))?.status).toBe(503);
    expect(runs()).toBe(2);
  });

  // FINDING (MEDIUM), fixed (the recorder gives up at the client's leaving once past the cap):
  // the cap passed while the client reads, the client leaves, the stream then goes quiet (an
  // SSE stream between events) for longer than a lease: give-up waited for a write that never
  // came, the silence watch stopped the heartbeats, and a retry ran the route a second time
  // though its final response had gone out. Observed before the fix: the retry 200, run 2.
  it('the cap passed before the client left, then silence past two leases: the retry is never a second run', async () => {
    let quiet = false;
    const { url, runs } = await streaming(
      200,
      (run, written) => run > 1 || !quiet || written > 2_500,
    );
    const key = randomUUID();
    await send(url, '/s', { key, body: A, leaveAfterBytes: 30_000 }).catch(() => undefined);
    quiet = true;
    await sleep(900);
    const answer = await retryPast409(url, key);
    expect(answer?.status).not.toBe(200);
    expect(runs()).toBe(1);
  });
});
