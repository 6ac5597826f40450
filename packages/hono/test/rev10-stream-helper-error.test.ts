import type { ServerType } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { streamSSE, streamText } from 'hono/streaming';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  idempotency,
  streamSSE as idemStreamSSE,
  streamText as idemStreamText,
} from '../src/index.js';
import { keyedPost, serveOnLoopback } from './keyed-post-support.js';

// rev10: the README's own completion example (`streamSSE`) when the work fails mid-stream.
// Hono's stream helpers catch what the callback throws (console.error, or `onError`) and then
// close the stream normally: the body ends cleanly, and the recorder takes it for a success.
// The design: "A stream that breaks is not a success"; an LLM call that failed after its
// first tokens must be run again by the retry, not replayed truncated for the retention.

const servers: ServerType[] = [];
// Put back after the file, whatever the starts did: the file shares its worker process with
// the files after it (a start's own restore, run in order, put back the previous start's
// silencer and left console.error silenced for them).
const consoleError = console.error;
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  console.error = consoleError;
});

async function start(abortOnError: boolean) {
  let runs = 0;
  // Without onError, Hono's helper console.errors the throw: kept out of the test output.
  if (!abortOnError) console.error = () => {};
  const app = new Hono();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/completions', (c) =>
    streamSSE(
      c,
      async (stream) => {
        runs++;
        await stream.writeSSE({ data: 'Hel' });
        // Past the recorder's read-ahead: the body streams (see rev10-short-stream for a
        // body that ends within it).
        await stream.sleep(50);
        if (runs === 1) throw new Error('the model provider failed mid-stream');
        await stream.writeSSE({ data: 'lo' });
      },
      abortOnError
        ? async (error, stream) => {
            // The only way out of a clean end with Hono's helper: abort its writer, which
            // is private (`stream.abort()` cancels the reader, which ends the body cleanly).
            await (stream as unknown as { writer: WritableStreamDefaultWriter }).writer.abort(
              error,
            );
          }
        : undefined,
    ),
  );
  const port = await serveOnLoopback(app, servers);
  return { port, runs: () => runs };
}

const post = (port: number, key: string) => keyedPost(`http://127.0.0.1:${port}/completions`, key);

describe('rev10 hono: a streamSSE callback that throws mid-stream', () => {
  // Was FINDING (MEDIUM), fixed for a helper without onError: Hono's streamSSE/stream helpers
  // swallow the callback's error and close the body normally, so idem recorded the truncated
  // stream as a final 200 and every retry for 24 h replayed "Hel" without running again. The
  // only trace is Hono's own `console.error(e)`, followed in the same synchronous step by the
  // stream's `close()`: the middleware watches that exact pair (a console.error whose caller
  // is the helper's code, then a helper stream's close before any other job), so another
  // request's log line is never taken for it (tests below). A throw handed to onError is the
  // app's (abort the writer, or use @idem/hono's helpers, which need neither).
  it('the retry runs the completion again instead of replaying the truncated stream', async () => {
    const { port, runs } = await start(false);
    const first = await post(port, 'sse-fail');
    expect(first.text).toBe('data: Hel\n\n');
    const retry = await post(port, 'sse-fail');
    // Observed: replayed: true, body "data: Hel\n\n", runs() === 1.
    expect(retry.replayed).toBe(false);
    expect(runs()).toBe(2);
  });

  it('held: aborting the helper writer in onError makes the body break: released, the retry runs and gets the whole stream', async () => {
    const { port, runs } = await start(true);
    const first = await post(port, 'sse-abort');
    expect(first.text === '(cut)' || first.text === 'data: Hel\n\n').toBe(true);
    const retry = await post(port, 'sse-abort');
    expect(retry).toMatchObject({
      status: 200,
      replayed: false,
      text: 'data: Hel\n\ndata: lo\n\n',
    });
    expect(runs()).toBe(2);
    const replay = await post(port, 'sse-abort');
    expect(replay).toMatchObject({ replayed: true, text: 'data: Hel\n\ndata: lo\n\n' });
  });
});

describe("rev21 hono: a warning for Hono's own stream helpers behind idempotency()", () => {
  async function warningsFor(helpers: 'hono' | 'idem') {
    const warnings: string[] = [];
    const app = new Hono();
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        onWarning: (message) => {
          warnings.push(message);
        },
      }),
    );
    const sse = helpers === 'hono' ? streamSSE : idemStreamSSE;
    const text = helpers === 'hono' ? streamText : idemStreamText;
    app.post('/sse', (c) => sse(c, async (stream) => stream.writeSSE({ data: 'a' })));
    app.post('/text', (c) =>
      text(c, async (stream) => {
        await stream.write('a');
      }),
    );
    for (const [path, key] of [
      ['/sse', 'w1'],
      ['/text', 'w2'],
      ['/sse', 'w3'],
    ]) {
      const response = await app.request(path as string, {
        method: 'POST',
        headers: { 'idempotency-key': key as string },
      });
      expect(response.status).toBe(200);
      await response.text();
    }
    return warnings;
  }

  it("Hono's streamSSE / streamText: one warning naming @idem/hono's helpers", async () => {
    const warnings = await warningsFor('hono');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/Hono's own streamSSE or streamText/);
    expect(warnings[0]).toMatch(/from @idem\/hono/);
  });

  it("@idem/hono's helpers: no warning", async () => {
    expect(await warningsFor('idem')).toEqual([]);
  });
});

describe("rev10 hono: the watch on Hono's own helpers, told apart", () => {
  type Route = (c: Context, attempt: number) => Response | Promise<Response>;
  let restoreConsole: (() => void) | undefined;
  afterEach(() => {
    restoreConsole?.();
    restoreConsole = undefined;
  });

  /** A server whose POST /work runs `route` behind idempotency (no onError anywhere). */
  async function serveRoute(route: Route) {
    let runs = 0;
    const logged: unknown[] = [];
    const silenced = console.error;
    // Hono's helper logs the throw: kept out of the test output, and counted.
    console.error = (...args: unknown[]) => {
      logged.push(args[0]);
    };
    const app = new Hono();
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.post('/work', (c) => route(c, ++runs));
    app.post('/log', (c) => {
      console.error(new Error('another request logs'));
      return c.json({ logged: true }, 201);
    });
    const port = await serveOnLoopback(app, servers);
    const call = (key: string, path = '/work') => keyedPost(`http://127.0.0.1:${port}${path}`, key);
    restoreConsole = () => {
      console.error = silenced;
    };
    return { call, runs: () => runs, logged };
  }

  it("Hono's streamText whose callback throws mid-stream: the retry runs again, then replays", async () => {
    const h = await serveRoute((c, attempt) =>
      streamText(c, async (s) => {
        await s.write('Hel');
        await s.sleep(30);
        if (attempt === 1) throw new Error('failed mid-stream');
        await s.write('lo');
      }),
    );
    expect((await h.call('text-1')).text).toBe('Hel');
    expect(await h.call('text-1')).toEqual({ status: 200, replayed: false, text: 'Hello' });
    expect(await h.call('text-1')).toEqual({ status: 200, replayed: true, text: 'Hello' });
    expect(h.runs()).toBe(2);
    expect(h.logged).toHaveLength(1);
  });

  it('a callback that throws before its first await (caught before the middleware sees the response): not recorded', async () => {
    const h = await serveRoute((c, attempt) =>
      streamSSE(c, async (s) => {
        if (attempt === 1) throw new Error('refused at once');
        await s.writeSSE({ data: 'ok' });
      }),
    );
    expect((await h.call('early-1')).text).toBe('');
    expect(await h.call('early-1')).toEqual({
      status: 200,
      replayed: false,
      text: 'data: ok\n\n',
    });
    expect((await h.call('early-1')).replayed).toBe(true);
    expect(h.runs()).toBe(2);
  });

  it("held: a callback that logs an Error itself and ends well is recorded (its log line is not the helper's)", async () => {
    const h = await serveRoute((c) =>
      streamSSE(c, async (s) => {
        console.error(new Error('a warning of the app'));
        await s.writeSSE({ data: 'a' });
        await s.sleep(20);
        console.error(new Error('another one'));
        await s.writeSSE({ data: 'b' });
        // Logged last, right before the helper closes the stream: by the callback, and in
        // the job just before the helper's own (not the helper's catch either).
        console.error(new Error('the last word'));
        queueMicrotask(() => console.error(new Error('just before the close')));
      }),
    );
    const first = await h.call('logs-1');
    expect(first.text).toBe('data: a\n\ndata: b\n\n');
    expect(await h.call('logs-1')).toEqual({ ...first, replayed: true });
    expect(h.runs()).toBe(1);
    expect(h.logged).toHaveLength(4);
  });

  it('held: streams ending well while other requests log Errors and another stream fails: only the failed one runs again', async () => {
    const h = await serveRoute((c, attempt) =>
      streamSSE(c, async (s) => {
        const key = c.req.header('idempotency-key') ?? '';
        await s.writeSSE({ data: key });
        await s.sleep(20);
        if (key === 'mixed-fail' && attempt <= 8) throw new Error('this one fails');
        await s.writeSSE({ data: 'end' });
      }),
    );
    const keys = ['mixed-a', 'mixed-b', 'mixed-fail', 'mixed-c'];
    const logs = Array.from({ length: 6 }, (_, i) => h.call(`log-${i}`, '/log'));
    const firsts = await Promise.all(keys.map((key) => h.call(key)));
    for (const log of await Promise.all(logs)) expect(log.status).toBe(201);
    expect(firsts.map((r) => r.text)).toEqual([
      'data: mixed-a\n\ndata: end\n\n',
      'data: mixed-b\n\ndata: end\n\n',
      'data: mixed-fail\n\n',
      'data: mixed-c\n\ndata: end\n\n',
    ]);
    const runsBefore = h.runs();
    const again = await Promise.all(keys.map((key) => h.call(key)));
    expect(again.map((r) => r.replayed)).toEqual([true, true, false, true]);
    // Only the failed key ran again.
    expect(h.runs()).toBe(runsBefore + 1);
  });
});
