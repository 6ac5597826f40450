import { setTimeout as sleep } from 'node:timers/promises';
import { serve } from '@hono/node-server';
import { describeOuterTimeout, PROBLEM, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { timeout } from 'hono/timeout';
import { afterAll, describe, expect, it } from 'vitest';
import { type HonoIdempotencyOptions, idempotency, stream } from '../src/index.js';
import { returningTimeout } from './outside-answer-support.js';

// nesthono32: attacks on the `answered_outside` marker of a Hono handler overtaken by a timeout
// mounted before idem (see timeout31-outer-timeout.test.ts): a timeout that answers by returning
// (no throw, no `c.error`), concurrent retries during the hold, a throw that is not an Error, a
// handler that never settles (bounded by maxHoldMs), a streamed answer after the overtake, and a
// timeout that fires as the handler finishes. Each must never run the handler twice for a key
// (but for maxHoldMs passed, the documented bound).

const LEASE = 300;
const closers: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

async function start(app: Hono): Promise<string> {
  let server!: ReturnType<typeof serve>;
  const port = await new Promise<number>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
  });
  closers.push(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${port}`;
}

/** An app with `hono/timeout` (`ms`) before idem and `POST /charges` answered by `route`. */
async function charges(
  route: (c: Context) => Promise<Response>,
  ms = 100,
  extra: Partial<HonoIdempotencyOptions> = {},
): Promise<string> {
  const app = new Hono();
  app.use(timeout(ms));
  app.use(idempotency(options(extra)));
  app.post('/charges', route);
  return start(app);
}

function options(extra: Partial<HonoIdempotencyOptions> = {}): HonoIdempotencyOptions {
  return {
    store: createMemoryStore(),
    scope: 'global',
    leaseMs: LEASE,
    onWarning: () => {},
    ...extra,
  };
}

let counter = 0;
const keyOf = (name: string) => `nesthono32-${name}-${process.pid}-${++counter}`;
const post = (url: string, path: string, key: string) =>
  send(url, path, { key, body: { a: 1 }, timeoutMs: 10_000 });
const typeOf = (answer: { headers: Record<string, unknown>; body: Buffer }) =>
  String(answer.headers['content-type']).startsWith('application/problem+json')
    ? (JSON.parse(answer.body.toString()) as { type?: unknown }).type
    : undefined;

/** Retries until the answer is not 409 (bounded). */
async function settled(url: string, path: string, key: string) {
  let last = await post(url, path, key);
  for (let i = 0; i < 200 && last.status === 409; i += 1) {
    await sleep(20);
    last = await post(url, path, key);
  }
  return last;
}

describeOuterTimeout(
  'nesthono32 hono: a timeout outside idem that answers 503 by returning (no throw, no c.error)',
  LEASE,
  async (probe) => {
    const app = new Hono();
    app.use(returningTimeout());
    app.use(idempotency(options()));
    app.post('/charges', async (c) => c.json({ run: await probe.work() }, 201));
    app.post('/fails', async (c) => c.json({ run: await probe.workOrThrow() }, 201));
    app.post('/own', (c) => c.json({ own: true }, 503));
    return { url: await start(app), close: async () => {} };
  },
  { timeoutStatus: 503, replay: false },
);

describe('nesthono32 hono: hono/timeout outside idem, attacks', () => {
  it('concurrent retries during the hold all get 409; then the marker; one run', async () => {
    let runs = 0;
    let letGo!: () => void;
    const gate = new Promise<void>((resolve) => {
      letGo = resolve;
    });
    const url = await charges(async (c) => {
      runs += 1;
      await gate;
      return c.json({ run: runs }, 201);
    });
    const key = keyOf('concurrent');
    expect((await post(url, '/charges', key)).status).toBe(504);
    const burst = await Promise.all(Array.from({ length: 8 }, () => post(url, '/charges', key)));
    expect(burst.map((answer) => answer.status)).toEqual(burst.map(() => 409));
    letGo();
    const last = await settled(url, '/charges', key);
    expect([last.status, typeOf(last)]).toEqual([500, PROBLEM.outcomeNotRecorded]);
    const again = await Promise.all(Array.from({ length: 4 }, () => post(url, '/charges', key)));
    expect(again.map((answer) => answer.status)).toEqual([500, 500, 500, 500]);
    expect(runs).toBe(1);
  });

  it('a throw that is not an Error after the 504 releases the key: a retry runs it', async () => {
    let runs = 0;
    const url = await charges(async (c) => {
      runs += 1;
      const run = runs;
      if (run === 1) {
        await sleep(300);
        throw 'not an Error';
      }
      return c.json({ run }, 201);
    });
    const key = keyOf('non-error');
    expect((await post(url, '/charges', key)).status).toBe(504);
    const last = await settled(url, '/charges', key);
    expect([last.status, last.body.toString()]).toEqual([201, JSON.stringify({ run: 2 })]);
    expect(runs).toBe(2);
  });

  it('a handler that never settles holds the key (409) only until maxHoldMs passes', async () => {
    let runs = 0;
    const url = await charges(
      async (c) => {
        runs += 1;
        if (runs === 1) await new Promise(() => {});
        return c.json({ run: runs }, 201);
      },
      100,
      { maxHoldMs: 900 },
    );
    const key = keyOf('never');
    expect((await post(url, '/charges', key)).status).toBe(504);
    expect((await post(url, '/charges', key)).status).toBe(409);
    expect(runs).toBe(1);
    // Past maxHoldMs the lease is no longer renewed; once it lapsed a retry takes the key over.
    const last = await settled(url, '/charges', key);
    expect(last.status).toBe(201);
    expect(runs).toBe(2);
  });

  it('a streamed answer the handler returns after the 504 (dropped by Hono) leaves the marker', async () => {
    let runs = 0;
    const url = await charges(async (c) => {
      runs += 1;
      await sleep(300);
      return stream(c, async (s) => {
        await s.write('charged');
      });
    });
    const key = keyOf('stream');
    expect((await post(url, '/charges', key)).status).toBe(504);
    const last = await settled(url, '/charges', key);
    expect([last.status, typeOf(last)]).toEqual([500, PROBLEM.outcomeNotRecorded]);
    expect(runs).toBe(1);
  });

  it('a streamed answer that beats the timeout is recorded and replayed, as before', async () => {
    let runs = 0;
    const url = await charges(async (c) => {
      runs += 1;
      return stream(c, async (s) => {
        await s.write('part one,');
        await sleep(400);
        await s.write('part two');
      });
    }, 200);
    const key = keyOf('stream-first');
    const first = await post(url, '/charges', key);
    expect([first.status, first.body.toString()]).toEqual([200, 'part one,part two']);
    const again = await post(url, '/charges', key);
    expect([again.status, again.headers['idempotent-replayed'], again.body.toString()]).toEqual([
      200,
      'true',
      'part one,part two',
    ]);
    expect(runs).toBe(1);
  });

  it('a timeout that fires as the handler finishes never runs it twice', async () => {
    for (let round = 0; round < 5; round += 1) {
      let runs = 0;
      const url = await charges(async (c) => {
        runs += 1;
        await sleep(100);
        return c.json({ run: runs }, 201);
      });
      const key = keyOf(`edge-${round}`);
      const first = await post(url, '/charges', key);
      expect([201, 504]).toContain(first.status);
      const last = await settled(url, '/charges', key);
      // The handler's own 201 (recorded: replayed) or the 504 (the marker): never a second run.
      if (last.status === 201) expect(last.headers['idempotent-replayed']).toBe('true');
      else expect([last.status, typeOf(last)]).toEqual([500, PROBLEM.outcomeNotRecorded]);
      expect(runs).toBe(1);
    }
  });
});
