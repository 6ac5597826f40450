// An outer middleware that answers early (a 503 "still being recorded") while the route still
// runs, and whose route then puts its own `Response` on `c.res` (apps/llm-api's `deliver`
// pattern): the route's answer is readable, so it is recorded and replayed, as before the
// `answered_outside` marker existed. The marker is only for a handler whose `Response` Hono
// dropped (hono/timeout, test/timeout31-outer-timeout.test.ts). Seen in the chaos suite's
// Redis blackhole row: the 201s were marked, and every retry got a 500.
import { serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { deliverEarly } from './outside-answer-support.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('@idem/hono: an early outside answer, the route assigning c.res itself', () => {
  const servers: Array<ReturnType<typeof serve>> = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  });

  it("the route's 201 is recorded and replayed: one run, no 500", async () => {
    let runs = 0;
    const background: Array<Promise<unknown>> = [];
    const warnings: string[] = [];
    // Answers 503 when the route takes longer than 50 ms, and reads the real answer later.
    const deliver = deliverEarly(background);
    const app = new Hono();
    app.post(
      '/jobs',
      deliver,
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        onWarning: (m) => void warnings.push(m),
      }),
      async (c) => {
        runs++;
        await sleep(200);
        const response = new Response(JSON.stringify({ run: runs }), {
          status: 201,
          headers: { 'content-type': 'application/json' },
        });
        c.res = undefined;
        c.res = response;
        return c.res;
      },
    );
    const port = await new Promise<number>((resolve) => {
      servers.push(
        serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (i) => resolve(i.port)),
      );
    });
    const call = () =>
      fetch(`http://127.0.0.1:${port}/jobs`, {
        method: 'POST',
        headers: { 'idempotency-key': 'job-1' },
      });
    expect((await call()).status).toBe(503);
    await sleep(400);
    await Promise.all(background);
    const retry = await call();
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await retry.json()).toEqual({ run: 1 });
    expect(runs).toBe(1);
    expect(warnings.filter((w) => w.includes('answered outside'))).toEqual([]);
  });
});
