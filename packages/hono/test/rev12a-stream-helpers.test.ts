import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { streamSSE as honoStreamSSE, streamText as honoStreamText } from 'hono/streaming';
import { afterAll, describe, expect, expectTypeOf, it } from 'vitest';
import { idempotency, stream, streamSSE, streamText } from '../src/index.js';

// rev12a: attacks on 7813e30 (@idem/hono's stream/streamText/streamSSE: a throw of the
// callback calls recorder.fail, so the stream is not recorded and the key is released).

const servers: ServerType[] = [];
afterAll(() =>
  Promise.all(
    servers.map(
      (server) =>
        new Promise((resolve) => {
          (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
          server.close(resolve);
        }),
    ),
  ),
);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function serveApp(app: Hono): Promise<number> {
  return new Promise<number>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
    servers.push(server);
  });
}

async function post(
  port: number,
  key: string,
  path = '/work',
  headers: Record<string, string> = {},
) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST',
    headers: { 'idempotency-key': key, ...headers },
    signal: AbortSignal.timeout(5_000),
  });
  const text = await response.text().catch(() => '(cut)');
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed') === 'true',
    headers: Object.fromEntries(
      [...response.headers].filter(([name]) => !['date', 'idempotent-replayed'].includes(name)),
    ),
    text,
  };
}

describe('rev12a @idem/hono stream helpers', () => {
  // FIXED (was FINDING MEDIUM; the key is now released when the body ends, after onError): the wrapper releases the key at the callback's throw, but Hono's helper then still runs onError (awaited: it may write to the stream, compensate, call a provider) before it closes the body: a retry with the same key acquires the free key and runs the handler beside the first execution's still-running onError (observed: retry 200 replayed:false, runs 2, while onError of run 1 had not finished). Fix: in failedExecution only mark the recorder failed (a flag), and give the key back when the helper's body ends (recorder.finish → release instead of record, the response still not recorded) or when its stream is cancelled; Koa's fix likewise declined to release while the first may still work (rev11).
  it('a retry does not run beside the first execution while its onError still runs', async () => {
    let runs = 0;
    const timeline: string[] = [];
    const app = new Hono();
    app.use(
      '/work',
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
    );
    app.post('/work', (c) => {
      runs++;
      const run = runs;
      return streamText(
        c,
        async (s) => {
          timeline.push(`run ${run} start`);
          await s.write(`run ${run};`);
          if (run === 1) throw new Error('provider failed');
          timeline.push(`run ${run} end`);
        },
        async (error, s) => {
          timeline.push(`onError ${run} start`);
          await sleep(600);
          await s.write(`error: ${error.message}`);
          timeline.push(`onError ${run} end`);
        },
      );
    });
    const port = await serveApp(app);
    const firstP = post(port, 'onerror-race');
    await sleep(200);
    const retry = await post(port, 'onerror-race');
    const first = await firstP;
    expect(first.text).toBe('run 1;error: provider failed');
    // The retry must not have run the handler while onError of run 1 was still running: a 409
    // (or a wait for it). Observed: 200, run 2 started before 'onError 1 end'.
    expect(
      timeline.indexOf('run 2 start') === -1 ||
        timeline.indexOf('run 2 start') > timeline.indexOf('onError 1 end'),
    ).toBe(true);
    expect(retry.status).toBe(409);
  });

  it('a callback that throws undefined (Hono: a cancellation, no onError, no log): not recorded, the retry runs again', async () => {
    let runs = 0;
    const app = new Hono();
    app.use(
      '/work',
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
    );
    app.post('/work', (c) => {
      runs++;
      const run = runs;
      return stream(c, async (s) => {
        await s.write(`run ${run} part 1;`);
        if (run === 1) throw undefined;
        await s.write('part 2');
      });
    });
    const port = await serveApp(app);
    const first = await post(port, 'undef');
    expect(first.text).toBe('run 1 part 1;');
    const retry = await post(port, 'undef');
    expect(retry).toMatchObject({ status: 200, replayed: false, text: 'run 2 part 1;part 2' });
    expect((await post(port, 'undef')).replayed).toBe(true);
    expect(runs).toBe(2);
  });

  it("the first client's response of a throwing callback is Hono's own helper's (status, headers, body)", async () => {
    const app = new Hono();
    app.use(
      '/*',
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
    );
    const cb = async (s: { writeSSE(m: { data: string; id?: string }): Promise<void> }) => {
      await s.writeSSE({ data: 'Hel', id: '1' });
      throw new Error('cut');
    };
    const onError = async (_e: Error, s: { writeSSE(m: { data: string }): Promise<void> }) => {
      await s.writeSSE({ data: 'sorry' });
    };
    app.post('/ours', (c) => streamSSE(c, cb, onError));
    app.post('/hono', (c) => honoStreamSSE(c, cb, onError));
    app.post('/ours-text', (c) =>
      streamText(c, async (s) => {
        await s.write('a');
        throw new Error('x');
      }),
    );
    app.post('/hono-text', (c) =>
      honoStreamText(c, async (s) => {
        await s.write('a');
        throw new Error('x');
      }),
    );
    const port = await serveApp(app);
    const quiet = console.error;
    console.error = () => {};
    try {
      const ours = await post(port, 'same-1', '/ours');
      const hono = await post(port, 'same-2', '/hono');
      expect(ours.status).toBe(hono.status);
      expect(ours.headers).toEqual(hono.headers);
      expect(ours.text).toBe(hono.text);
      expect(ours.text).toBe('data: Hel\nid: 1\n\ndata: sorry\n\nevent: error\ndata: cut\n\n');
      const oursText = await post(port, 'same-3', '/ours-text');
      const honoText = await post(port, 'same-4', '/hono-text');
      expect({ ...oursText, replayed: undefined }).toEqual({ ...honoText, replayed: undefined });
    } finally {
      console.error = quiet;
    }
  });

  it('a callback that throws before its first await: not recorded, the retry runs, then a replay of the retry', async () => {
    let runs = 0;
    const app = new Hono();
    app.use(
      '/work',
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
    );
    app.post('/work', (c) => {
      runs++;
      const run = runs;
      return streamSSE(
        c,
        async (s) => {
          if (run === 1) throw new Error('at once');
          await s.writeSSE({ data: `run ${run}` });
        },
        async (_e, s) => {
          await s.writeSSE({ data: 'failed' });
        },
      );
    });
    const port = await serveApp(app);
    const first = await post(port, 'sync-throw');
    expect(first.text).toContain('data: failed');
    const retry = await post(port, 'sync-throw');
    expect(retry).toMatchObject({ status: 200, replayed: false });
    expect(retry.text).toBe('data: run 2\n\n');
    const replay = await post(port, 'sync-throw');
    expect(replay).toMatchObject({ replayed: true, text: 'data: run 2\n\n' });
    expect(runs).toBe(2);
  });

  it('a callback that closes the stream and then throws: one outcome, never both a replay and a rerun', async () => {
    let runs = 0;
    const app = new Hono();
    app.use(
      '/work',
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
    );
    app.post('/work', (c) => {
      runs++;
      const run = runs;
      return streamText(c, async (s) => {
        await s.write(`run ${run} whole`);
        await s.close();
        if (run === 1) throw new Error('audit after close');
      });
    });
    const port = await serveApp(app);
    const quiet = console.error;
    console.error = () => {};
    try {
      const first = await post(port, 'close-throw');
      expect(first.text).toBe('run 1 whole');
      await sleep(50);
      const second = await post(port, 'close-throw');
      const third = await post(port, 'close-throw');
      // Either recorded (both replays of run 1) or released (run 2, then its replay).
      if (second.replayed)
        expect([second.text, third.text, runs]).toEqual(['run 1 whole', 'run 1 whole', 1]);
      else
        expect([second.text, third.replayed, third.text, runs]).toEqual([
          'run 2 whole',
          true,
          'run 2 whole',
          2,
        ]);
    } finally {
      console.error = quiet;
    }
  });

  it('a waiting duplicate attached to the live SSE stream of a callback that throws: cut, never a clean end, and the retry after runs', async () => {
    let runs = 0;
    const app = new Hono();
    app.use(
      '/work',
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
    );
    app.post('/work', (c) => {
      runs++;
      const run = runs;
      return streamSSE(
        c,
        async (s) => {
          await s.writeSSE({ data: `run ${run} a` });
          await s.sleep(300);
          if (run === 1) throw new Error('provider failed');
          await s.writeSSE({ data: `run ${run} b` });
        },
        async () => {},
      );
    });
    const port = await serveApp(app);
    const firstP = post(port, 'live-throw');
    await sleep(100);
    const attached = await post(port, 'live-throw');
    await firstP;
    // Attached (replayed header) or a 409: never the cut stream as a complete answer.
    if (attached.status === 200) expect(attached.text).toBe('(cut)');
    else expect(attached.status).toBe(409);
    const retry = await post(port, 'live-throw');
    expect(retry).toMatchObject({
      status: 200,
      replayed: false,
      text: 'data: run 2 a\n\ndata: run 2 b\n\n',
    });
    expect(runs).toBe(2);
  });

  // Rewritten with the MEDIUM fix: the key is now held until the failed stream's body ends
  // (after onError), so the second request no longer runs beside onError; it attaches to the
  // failing live stream and is cut, and the retry after the end runs the work again.
  it('a throw before the first await while onError still streams: a duplicate attached to it is cut, never a clean end; the retry after runs once', async () => {
    let runs = 0;
    const app = new Hono();
    app.use(
      '/work',
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }),
    );
    app.post('/work', (c) => {
      runs++;
      const run = runs;
      return streamSSE(
        c,
        async (s) => {
          if (run === 1) throw new Error('at once');
          for (const part of ['a', 'b', 'c']) {
            await s.writeSSE({ data: `run ${run} ${part}` });
            await s.sleep(150);
          }
        },
        async (_e, s) => {
          for (const part of ['x', 'y', 'z']) {
            await s.writeSSE({ data: `failed ${run} ${part}` });
            await s.sleep(150);
          }
        },
      );
    });
    const port = await serveApp(app);
    const firstP = post(port, 'orphan');
    await sleep(60);
    const duplicate = await post(port, 'orphan');
    const first = await firstP;
    expect(first.text).toContain('data: failed 1 z');
    // Attached to run 1's live stream, which ended without an outcome: cut (or 409), never a
    // clean end taken for the answer.
    expect(duplicate.text).toBe('(cut)');
    expect(runs).toBe(1);
    const whole = 'data: run 2 a\n\ndata: run 2 b\n\ndata: run 2 c\n\n';
    const retry = await post(port, 'orphan');
    expect(retry).toMatchObject({ status: 200, replayed: false, text: whole });
    expect((await post(port, 'orphan')).text).toBe(whole);
    expect(runs).toBe(2);
  });

  it("the wrappers' types are Hono's", () => {
    expectTypeOf(streamSSE).toEqualTypeOf(honoStreamSSE);
    expectTypeOf(streamText).toEqualTypeOf(honoStreamText);
    expectTypeOf(stream).parameters.toEqualTypeOf<
      Parameters<typeof import('hono/streaming').stream>
    >();
    const c = {} as Context;
    expectTypeOf(streamSSE).toBeCallableWith(c, async () => {});
  });
});
