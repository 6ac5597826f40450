import { setTimeout as sleep } from 'node:timers/promises';
import { serve } from '@hono/node-server';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev32d FINDING (HIGH, documentation led to a second run beside the first; a known limit now):
// nesthono32's README advised "mount the timeout after this middleware to have the handler's
// answer recorded". It is not: `hono/timeout` mounted after `idempotency()` makes `next()` settle
// with its 504 while the handler still runs, and nothing of the handler's end reaches this
// middleware (compose drops its `Response` once the context is finalized), so the 504 is judged
// as the handler's answer and released at once: a retry runs the handler beside the first. The
// advice is withdrawn (README: mount it before). `it.fails` pins the limit until Hono gives a way
// to learn of the handler's end. hono34: still a limit with `hono/timeout` (a throw of the timeout
// and one of the handler read alike from outside compose, and nothing says the handler still
// runs); @idem/hono's `timeout()` holds there (test/hono34-timeout-inside.test.ts).

const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

describe('rev32d hono: hono/timeout mounted after idempotency()', () => {
  it.fails('the handler still running after the 504 never runs a second time beside it', async () => {
    let runs = 0;
    let running = 0;
    let overlap = 0;
    const app = new Hono();
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.use(timeout(100));
    app.post('/charges', async (c) => {
      runs += 1;
      running += 1;
      if (running > 1) overlap += 1;
      await sleep(400);
      running -= 1;
      return c.json({ charged: runs }, 201);
    });
    let server!: ReturnType<typeof serve>;
    const port = await new Promise<number>((resolve) => {
      server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
        resolve(info.port),
      );
    });
    closers.push(() => new Promise((resolve) => server.close(resolve)));
    const url = `http://127.0.0.1:${port}`;
    const key = `rev32d-inside-${process.pid}`;
    const first = await send(url, '/charges', { key, body: {} });
    const retry = await send(url, '/charges', { key, body: {} });
    expect(first.status).toBe(504);
    expect(retry.status).toBe(409);
    await sleep(800);
    const later = await send(url, '/charges', { key, body: {} });
    expect(later.status).not.toBe(504);
    expect(runs).toBe(1);
    expect(overlap).toBe(0);
  });
});
