import { createRequire } from 'node:module';
import type { ServerType } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { streamSSE, streamText } from 'hono/streaming';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { keyedPost, serveOnLoopback } from './keyed-post-support.js';

// edgerev22: adversarial review of fa25651 (a throw in the callback of Hono's own
// streamSSE/streamText without onError is seen through Hono's `console.error` of it and the
// helper stream's `close` in the same step, so the truncated stream is not recorded). Real
// Hono apps on @hono/node-server, on loopback.

const cjs = createRequire(import.meta.url)('../dist/index.cjs') as {
  idempotency: typeof idempotency;
};

const servers: ServerType[] = [];
const original = console.error;
let restore: (() => void) | undefined;
afterEach(() => {
  restore?.();
  restore = undefined;
});
afterAll(async () => {
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  console.error = original;
});

/** Replaces console.error with a silent one that counts its calls; put back after the test. */
function silence(): unknown[] {
  const logged: unknown[] = [];
  const before = console.error;
  console.error = (...args: unknown[]) => {
    logged.push(args[0]);
  };
  restore = () => {
    console.error = before;
  };
  return logged;
}

type Route = (c: Context, attempt: number) => Response | Promise<Response>;

async function serveApp(route: Route, make: typeof idempotency = idempotency) {
  let runs = 0;
  const app = new Hono();
  app.use(make({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/work', (c) => route(c, ++runs));
  const port = await serveOnLoopback(app, servers);
  const call = (key: string) => keyedPost(`http://127.0.0.1:${port}/work`, key);
  return { call, runs: () => runs };
}

/**
 * Puts a counter at the bottom of console.error: what is put on top of it later calls down to
 * it. Returns how many of idem's console.error watchers (named `errorWatcher`) the last call
 * went through.
 */
function countingBottom(): () => number {
  let frames = -1;
  const before = console.error;
  console.error = () => {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 10_000;
    const stack = new Error('bottom').stack ?? '';
    Error.stackTraceLimit = limit;
    frames = stack.split('\n').filter((line) => /\berrorWatcher\b/.test(line)).length;
  };
  restore = () => {
    console.error = before;
  };
  return () => frames;
}

describe('edgerev22 hono: console.error watchers do not pile up', () => {
  // FINDING MEDIUM (fixed): the state of the watch (the `console.error` it put in place, the
  // flag, the bodies watched) was per module copy. With the ESM and the CJS copy of
  // @idem/hono in one process (one app imports it, another package requires it), each copy
  // saw the other's watcher on top of console.error and wrapped it again, on every middleware
  // made and on every response of Hono's helpers (`watchHelperBody` re-watches): the chain grew
  // by one per request, each layer capturing a stack trace on every console.error call.
  it('ESM and CJS copies, middlewares and helper responses made alternately: at most one watcher on top', async () => {
    const watchers = countingBottom();
    const esm = await serveApp((c) => streamText(c, async (s) => void (await s.write('a'))));
    const other = await serveApp(
      (c) => streamText(c, async (s) => void (await s.write('b'))),
      cjs.idempotency,
    );
    for (let i = 0; i < 8; i++) {
      idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} });
      cjs.idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} });
      expect((await esm.call(`esm-${i}`)).text).toBe('a');
      expect((await other.call(`cjs-${i}`)).text).toBe('b');
    }
    console.error('probe');
    // Observed before the fix: 34 (two at the start, then one for each middleware made and
    // each helper response, alternately by the two copies).
    expect(watchers()).toBe(1);
  });
});

describe('edgerev22 hono: what console.error is when the helper logs', () => {
  /** A logger set up after the app (Sentry's console integration, a test spy): it calls the one it replaced. */
  function wrapConsoleError(): void {
    const previous = console.error;
    const wrapper = (...args: unknown[]) => previous(...args);
    console.error = wrapper;
  }

  const failingAtOnce: Route = (c, attempt) =>
    streamSSE(c, async (s) => {
      if (attempt === 1) throw new Error('refused at once');
      await s.writeSSE({ data: 'ok' });
    });
  const failingMidStream: Route = (c, attempt) =>
    streamSSE(c, async (s) => {
      await s.writeSSE({ data: 'Hel' });
      await s.sleep(30);
      if (attempt === 1) throw new Error('failed mid-stream');
      await s.writeSSE({ data: 'lo' });
    });

  it('held: a logger wraps console.error after the app was made, the callback throws mid-stream: the retry runs again', async () => {
    const logged = silence();
    const h = await serveApp(failingMidStream);
    wrapConsoleError();
    expect((await h.call('late-mid')).text).toBe('data: Hel\n\n');
    expect(await h.call('late-mid')).toEqual({
      status: 200,
      replayed: false,
      text: 'data: Hel\n\ndata: lo\n\n',
    });
    expect(h.runs()).toBe(2);
    expect(logged).toHaveLength(1);
  });

  // FINDING LOW (fixed): console.error was watched again (put back on top) when a middleware
  // was made and after `next()` for a helper's response, not before: a callback that throws
  // before its first await is logged before that, through a logger set up after the app (which
  // calls idem's watcher, so the watcher's caller is the logger, not Hono's helper), and the
  // stream, empty but ended as a success, was recorded: the retry got the empty 200 replayed.
  it('a logger wraps console.error after the app was made, the callback throws before its first await: the retry runs again', async () => {
    const logged = silence();
    const h = await serveApp(failingAtOnce);
    wrapConsoleError();
    expect((await h.call('late-once')).text).toBe('');
    expect(await h.call('late-once')).toEqual({
      status: 200,
      replayed: false,
      text: 'data: ok\n\n',
    });
    expect(h.runs()).toBe(2);
    expect(logged).toHaveLength(1);
  });

  it('held: two apps (two middlewares) at once: one fails mid-stream, the other logs an Error of its own as its last step and ends well', async () => {
    silence();
    const failing = await serveApp(failingMidStream);
    const logging = await serveApp((c) =>
      streamText(c, async (s) => {
        await s.write('x');
        await s.sleep(30);
        console.error(new Error('a log line of the app'));
        await s.write('y');
        console.error(new Error('its last word'));
      }),
    );
    const [a, b] = await Promise.all([failing.call('two-a'), logging.call('two-b')]);
    expect([a.text, b.text]).toEqual(['data: Hel\n\n', 'xy']);
    const [a2, b2] = await Promise.all([failing.call('two-a'), logging.call('two-b')]);
    expect([a2.replayed, b2.replayed]).toEqual([false, true]);
    expect(b2.text).toBe('xy');
    expect([failing.runs(), logging.runs()]).toEqual([2, 1]);
  });
});
