import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { OutcomeNotRecordedError } from '@idem/core';
import middy6 from '@middy/core';
import middy7 from '@middy/core-7';
import { build } from 'esbuild';
import { afterAll, describe, expect, it } from 'vitest';
import { functionScope, idempotency, isIdemError } from '../src/index.js';
import * as lambdaEnv from './lambda-env.js';

const { fakeContext, flaky, interposeErrorAccessor, settle, sleep, useEnv } = lambdaEnv;

// lamrev23: adversarial review of the merged lamfix (1ab31cbd): idempotency() tells Middy's own
// writes of request.error from a hook's by V8 call sites noted at its `before`.
//
// Findings (each below, with its severity):
// - HIGH, fixed: on @middy/core 7.7 and later (npm's `latest`, 7.9.2; @idem/lambda declared no
//   Middy range then, nothing stopped a user there) Middy calls the hooks from `runRequest` itself
//   and returns an early answer in the synchronous run of its copy: no decision was made, the
//   key stayed in progress until its lease ended, then a retry ran a handler that had returned
//   a second time; a handler that threw and a later `onError` answering 500 had that 500
//   recorded and replayed forever. 51 of the 221 Middy tests of this package failed on 7.9.2
//   (InProgressError, `expected 2 to be 1`), one does now (kept below, it.fails).
// - MEDIUM (wrong status), fixed: a hook's write made eight helper calls deep or more was cut
//   off by the 12-frame capture: the writer was unknown, the old rules took the noting `after`
//   pair for Middy's catch (a not-recorded marker after an answer the caller got).
// - LOW (global state), fixed: every invocation swapped Error.prepareStackTrace twice (its
//   `before`), now only an error or an early answer formats the frames noted at `before`.
// Held (no finding; on Middy 6, and on 7.9.2 since the fix above): bundles (esbuild, plain and
// minified, with source maps and Node's source maps toggled mid-invocation), an app's
// prepareStackTrace and a stackTraceLimit of 0 or 1, a throwing captureStackTrace, interleaved
// invocations, the cost (a few µs), Node 22/24 (this file under scripts/test-node.sh).

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;
type Middy = typeof middy6;
const middies: [string, Middy][] = [
  ['6', middy6],
  ['7', middy7 as unknown as Middy],
];

const here = dirname(fileURLToPath(import.meta.url));
const run = promisify(execFile);

/** A handler that returns `value`; `runs()` counts. */
function returning(value: unknown) {
  let count = 0;
  return {
    run: async () => {
      count += 1;
      return value;
    },
    runs: () => count,
  };
}

/**
 * On `middy`: a handler that throws on its first run, `idem`, then an `onError` that hands
 * every error but idempotency()'s own (a retry's InProgressError) to `then`.
 */
function throwsOnceOn(middy: Middy, idem: object, then: (request: Req) => Promise<unknown>) {
  const h = flaky();
  const handler = middy(h.run)
    .use(idem)
    .use({
      onError: async (request: Req) => (isIdemError(request.error) ? undefined : then(request)),
    });
  return { handler, runs: h.runs };
}

/** Calls `depth` nested functions, then `fn` (a write made deep in helpers). */
const nested = (depth: number, fn: () => void): void =>
  depth === 0 ? fn() : nested(depth - 1, fn);

describe('lamrev23: Middy 7.7+ (npm latest) (redis)', () => {
  const env = useEnv('redis');
  const idem = (leaseMs?: number) =>
    idempotency({
      scope: functionScope,
      store: env().store,
      key: (e: Ev) => e.id,
      ...(leaseMs ? { leaseMs } : {}),
    });

  // FIXED (was FINDING HIGH, exactly-once): Middy 7.7+ copies an early answer and returns
  // `request.response` in one synchronous run (from `runRequest`, which calls the hooks): the
  // read was taken for the hook's own and no decision was made; the key stayed in progress
  // until its lease ended, then the retry ran the handler a second time. Now a read in the
  // copy's run from the function that called idempotency()'s `before` is Middy's.
  it('Middy 7.9.2: the handler returns, a later `after` answers early: recorded, no second run after the lease', async () => {
    for (let i = 0; i < 2; i++) {
      const h = returning({ ok: true });
      const handler = middy7(h.run)
        .use(idem(300))
        .use({ after: async () => ({ early: true }) });
      const id = `m7-after-early-${i}`;
      // (600 ms left: the lease and its heartbeats end with the deadline)
      expect(await handler({ id }, fakeContext(600))).toEqual({ early: true });
      await sleep(1_000);
      expect(await settle(handler({ id }, fakeContext(10_000)))).toEqual({
        value: { early: true },
      });
      expect(h.runs()).toBe(1);
    }
  });

  // FIXED (was FINDING HIGH, an error recorded as the outcome): on Middy 7.7+ a handler that
  // threw, then a later `onError` answering 500 (http-error-handler): the 500 was recorded and
  // replayed to every retry; the handler never ran again. Middy's catch there is written by
  // `runRequest`, which calls the hooks: known now by its caller (`runRequest`'s), right after
  // its reset of `request.response`: released at the catch.
  it('Middy 7.9.2: the handler throws, a later `onError` answers 500: the caller gets it, released, the retry runs', async () => {
    const h = throwsOnceOn(middy7 as unknown as Middy, idem(), async () => ({ statusCode: 500 }));
    const handler = h.handler;
    expect(await handler({ id: 'm7-500' }, fakeContext(10_000))).toEqual({ statusCode: 500 });
    expect(await handler({ id: 'm7-500' }, fakeContext(10_000))).toBe('ok');
    expect(await handler({ id: 'm7-500' }, fakeContext(10_000))).toBe('ok');
    expect(h.runs()).toBe(2);
  });

  // FIXED (was FINDING MEDIUM, liveness): the same, a later `onError` that throws (a string,
  // the same error): the key was held until the deadline (10 s here); released at the catch.
  // And a later `before` answering early (a cache, a warmup) left the key in progress too.
  it('Middy 7.9.2: a later `onError` rethrows, a later `before` answers early: the key is free at once', async () => {
    for (const thrown of ['failed', 'same']) {
      const h = throwsOnceOn(middy7 as unknown as Middy, idem(), async (request) => {
        throw thrown === 'same' ? request.error : thrown;
      });
      const handler = h.handler;
      const id = `m7-rethrow-${thrown}`;
      expect(await settle(handler({ id }, fakeContext(10_000)))).toHaveProperty('error');
      expect(await settle(handler({ id }, fakeContext(10_000)))).toEqual({ value: 'ok' });
      expect(h.runs()).toBe(2);
    }
    let warm = true;
    const h = returning('ran');
    const cached = middy7(h.run)
      .use(idem())
      .use({ before: async () => (warm ? 'warm' : undefined) });
    expect(await cached({ id: 'm7-before-early' }, fakeContext(10_000))).toBe('warm');
    warm = false;
    expect(await cached({ id: 'm7-before-early' }, fakeContext(10_000))).toBe('ran');
    expect(h.runs()).toBe(1);
  });

  it('held: Middy 7.9.2, the handler returns undefined, the first `after` writes a catch-like pair (sync, after an await), a later `after` throws or not: never a second run', async () => {
    for (const awaits of [false, true]) {
      for (const laterThrows of [false, true]) {
        const h = returning(undefined);
        const handler = middy7(h.run)
          .use(idem())
          .use({
            after: async () => {
              if (laterThrows) throw new Error('invalid response');
            },
          })
          .use({
            after: async (request: Req) => {
              if (awaits) await sleep(2);
              request.response = undefined;
              request.error = new Error('noted');
            },
          });
        const id = `m7-pair-${awaits}-${laterThrows}`;
        const first = await settle(handler({ id }, fakeContext(10_000)));
        const retry = await settle(handler({ id }, fakeContext(10_000)));
        if (laterThrows) {
          expect((first.error as Error).message).toBe('invalid response');
          expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
        } else {
          expect([first, retry]).toEqual([{ value: undefined }, { value: undefined }]);
        }
        expect(h.runs()).toBe(1);
      }
    }
  });

  // FINDING MEDIUM (wrong status), left open: on Middy 7.7+ a later middleware with its own
  // accessor on request.error sits between Middy's catch and the watch: its setter, called by
  // Middy's `runRequest`, looks like a hook called by `runRequest` (7.7+ calls the hooks from
  // there), so the catch is taken for a hook's write and the reset before it for the handler's
  // return: the handler THREW, the retry gets OutcomeNotRecordedError (never a second run). On
  // Middy 6 the frames differ (hooks are called by `runMiddlewares`) and the writes alone
  // decide (lamfix-writer.test.ts). Telling a setter from a hook would need the call sites of
  // the reset too. Workaround: no accessor on request.error in a middleware, or Middy 6.
  it.fails('Middy 7.9.2: a later middleware with its own accessor on request.error, the handler throws: released, the retry runs', async () => {
    const h = flaky();
    const handler = middy7(h.run).use(idem()).use(interposeErrorAccessor);
    expect(await settle(handler({ id: 'm7-interposed' }, fakeContext(10_000)))).toHaveProperty(
      'error',
    );
    expect(await settle(handler({ id: 'm7-interposed' }, fakeContext(10_000)))).toEqual({
      value: 'ok',
    });
    expect(h.runs()).toBe(2);
  });
});

describe('lamrev23: bundles, minified code, source maps', () => {
  const work = mkdtempSync(join(tmpdir(), 'lamrev23-'));
  afterAll(() => rmSync(work, { recursive: true, force: true }));
  const expected = {
    throwString: { first: true, retry: { value: 'ok' }, runs: 2 },
    afterPair: { first: { value: '(undefined)' }, retry: { value: '(undefined)' }, runs: 1 },
    afterEarly: { first: { value: { early: true } }, retry: { value: { early: true } }, runs: 1 },
    onErrorEarly: { first: { value: { statusCode: 500 } }, retry: { value: 'ok' }, runs: 2 },
    afterNotes: { first: { value: '(undefined)' }, retry: { value: '(undefined)' }, runs: 1 },
  };

  /** Bundles the fixture (Middy `major`, minified or not, with a source map), runs it. */
  async function bundleAndRun(major: '6' | '7', minify: boolean, nodeArgs: string[], envs = {}) {
    const outfile = join(work, `bundle-${major}-${minify}.mjs`);
    await build({
      entryPoints: [join(here, 'fixtures/lamrev23-bundle-entry.ts')],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      minify,
      sourcemap: true,
      outfile,
      logLevel: 'silent',
      ...(major === '7' ? { alias: { '@middy/core': '@middy/core-7' } } : {}),
    });
    const { stdout } = await run(process.execPath, [...nodeArgs, outfile], {
      env: { ...process.env, ...envs },
      timeout: 60_000,
    });
    return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}');
  }

  // Held: Middy, the hooks and idempotency() in one file (positions, not files, are compared),
  // on one line each when minified (columns differ), with the source map applied to stacks
  // (V8's call sites stay unmapped), and with Node's source maps turned on and off between the
  // capture at `before` and the writes.
  it('held on Middy 6 (on 7.9.2: fixed, failed before): esbuild bundles (plain, minified), run with --enable-source-maps and with source maps toggled mid-invocation', async () => {
    for (const major of ['6', '7'] as const) {
      for (const minify of [false, true]) {
        expect([major, minify, await bundleAndRun(major, minify, [])]).toEqual([
          major,
          minify,
          expected,
        ]);
      }
      expect([major, await bundleAndRun(major, true, ['--enable-source-maps'])]).toEqual([
        major,
        expected,
      ]);
      expect([
        major,
        await bundleAndRun(major, true, [], { LAMREV23_TOGGLE_SOURCE_MAPS: '1' }),
      ]).toEqual([major, expected]);
    }
  });
});

describe('lamrev23: call sites, stacks and globals (redis)', () => {
  const env = useEnv('redis');
  const idem = () =>
    idempotency({ scope: functionScope, store: env().store, key: (e: Ev) => e.id });

  // FIXED (was FINDING MEDIUM, wrong status): the writer of request.error was read from 12
  // frames: an `after` that awaits, then writes `request.response = undefined; request.error`
  // through eight nested helpers or more (a logging or error library) was cut off before
  // Middy's `runMiddlewares`: unknown, so the old rules took it for Middy's catch of a later
  // hook: a not-recorded marker, though Middy answered (undefined) and the retry should replay
  // it. Now frames that end at the limit before telling are read again, deeper.
  it('an `after` that awaits, then writes a catch-like pair 8 to 40 helpers deep: the answer is recorded and replayed, one run', async () => {
    for (const middyName of ['6', '7'] as const) {
      const middy = middies.find(([name]) => name === middyName)?.[1] as Middy;
      for (const depth of [8, 12, 40]) {
        const h = returning({ statusCode: 200 });
        const handler = middy(h.run)
          .use(idem())
          .use({
            after: async (request: Req) => {
              await sleep(2);
              nested(depth, () => {
                request.response = undefined;
                request.error = new Error('noted');
              });
            },
          });
        const id = `deep-${middyName}-${depth}`;
        const first = await settle(handler({ id }, fakeContext(10_000)));
        const retry = await settle(handler({ id }, fakeContext(10_000)));
        expect([middyName, depth, first, retry, h.runs()]).toEqual([
          middyName,
          depth,
          { value: undefined },
          { value: undefined },
          1,
        ]);
      }
    }
  });

  it('held on Middy 6 (on 7.9.2: fixed, failed before): the handler throws, a later `onError` throws a string from 40 helpers deep after an await: released at once', async () => {
    for (const [name, middy] of middies) {
      const h = throwsOnceOn(middy, idem(), async () => {
        await sleep(1);
        nested(40, () => {
          throw 'failed';
        });
      });
      const handler = h.handler;
      const id = `deep-throw-${name}`;
      expect(await settle(handler({ id }, fakeContext(10_000)))).toHaveProperty('error');
      expect([name, await settle(handler({ id }, fakeContext(10_000)))]).toEqual([
        name,
        { value: 'ok' },
      ]);
      expect(h.runs()).toBe(2);
    }
  });

  // FIXED (was FINDING LOW, global state): every invocation wrote Error.prepareStackTrace twice
  // (set, then put back) in its `before`: an app or APM agent that watches it (an accessor) saw
  // writes on every request. Now `before` only captures (V8 formats lazily), and only an error
  // or an early answer formats those frames with a swapped prepareStackTrace.
  it('a successful invocation never writes Error.prepareStackTrace (an error path does, and puts it back)', async () => {
    const original = Object.getOwnPropertyDescriptor(Error, 'prepareStackTrace');
    let current: unknown = original?.value;
    let writes = 0;
    Object.defineProperty(Error, 'prepareStackTrace', {
      configurable: true,
      get: () => current,
      set: (value) => {
        writes += 1;
        current = value;
      },
    });
    try {
      const h = returning('ok');
      const handler = middy6(h.run).use(idem());
      expect(await handler({ id: 'globals-ok' }, fakeContext(10_000))).toBe('ok');
      expect(await handler({ id: 'globals-ok' }, fakeContext(10_000))).toBe('ok');
      expect(writes).toBe(0);
      const f = flaky();
      const throwing = middy6(f.run).use(idem());
      expect(await settle(throwing({ id: 'globals-throw' }, fakeContext(10_000)))).toHaveProperty(
        'error',
      );
      expect(writes).toBeGreaterThan(0);
      expect(current).toBe(original?.value);
      expect(await throwing({ id: 'globals-throw' }, fakeContext(10_000))).toBe('ok');
    } finally {
      if (original) Object.defineProperty(Error, 'prepareStackTrace', original);
      else delete (Error as { prepareStackTrace?: unknown }).prepareStackTrace;
    }
  });

  it("held on Middy 6 (on 7.9.2: fixed, failed before): an app's Error.prepareStackTrace (source-map-support-like, returns a string) and stackTraceLimit 1 stay as they were; call sites still read", async () => {
    const original = Object.getOwnPropertyDescriptor(Error, 'prepareStackTrace');
    const limit = Error.stackTraceLimit;
    const appPrepare = (error: Error, sites: unknown[]) => `${error.message} (${sites.length})`;
    try {
      Error.prepareStackTrace = appPrepare;
      Error.stackTraceLimit = 1;
      for (const [name, middy] of middies) {
        const h = throwsOnceOn(middy, idem(), async () => {
          throw 'failed';
        });
        const handler = h.handler;
        const id = `app-prepare-${name}`;
        expect(await settle(handler({ id }, fakeContext(10_000)))).toHaveProperty('error');
        expect(await settle(handler({ id }, fakeContext(10_000)))).toEqual({ value: 'ok' });
        expect(h.runs()).toBe(2);
        expect(Error.prepareStackTrace).toBe(appPrepare);
        expect(Error.stackTraceLimit).toBe(1);
        expect(new Error('x').stack).toBe('x (1)');
      }
    } finally {
      if (original) Object.defineProperty(Error, 'prepareStackTrace', original);
      else delete (Error as { prepareStackTrace?: unknown }).prepareStackTrace;
      Error.stackTraceLimit = limit;
    }
  });

  it('held: a throwing Error.captureStackTrace (a sandbox): the fallback decides, never a second run; globals put back', async () => {
    const descriptor = Object.getOwnPropertyDescriptor(Error, 'captureStackTrace');
    const limit = Error.stackTraceLimit;
    const prepare = Error.prepareStackTrace;
    Object.defineProperty(Error, 'captureStackTrace', {
      ...descriptor,
      value: () => {
        throw new Error('no stacks here');
      },
    });
    try {
      const h = returning(undefined);
      const handler = middy6(h.run)
        .use(idem())
        .use({
          after: async (request: Req) => {
            request.error = new Error('noted');
          },
        });
      expect(await settle(handler({ id: 'throwing-capture' }, fakeContext(10_000)))).toEqual({
        value: undefined,
      });
      expect(await settle(handler({ id: 'throwing-capture' }, fakeContext(10_000)))).toEqual({
        value: undefined,
      });
      expect(h.runs()).toBe(1);
      expect(Error.stackTraceLimit).toBe(limit);
      expect(Error.prepareStackTrace).toBe(prepare);
    } finally {
      if (descriptor) Object.defineProperty(Error, 'captureStackTrace', descriptor);
    }
  });

  // Held: the frames are noted per invocation (at its `before`), never shared: 60 interleaved
  // invocations of one handler on Middy 6 and 7.9.2, throwing then rethrowing a string
  // (released at the catch), returning undefined under a noting `after` (recorded), answering
  // early from a later `after` (recorded), each decided on its own.
  it('held on Middy 6 (on 7.9.2: fixed, failed before): 60 interleaved invocations (throw + string rethrow, undefined + noting after, early answers): each decided on its own', async () => {
    for (const [name, middy] of middies) {
      const runs = new Map<string, number>();
      const handler = middy(async (event: Ev & { kind: string }) => {
        runs.set(event.id, (runs.get(event.id) ?? 0) + 1);
        await sleep(Math.random() * 5);
        if (event.kind === 'throw' && runs.get(event.id) === 1) throw new Error('transient');
        return event.kind === 'undefined' ? undefined : `ok-${event.id}`;
      })
        .use(idem())
        .use({
          after: async (request: Req) => {
            await sleep(Math.random() * 3);
            if (request.event.kind === 'early') return { early: request.event.id };
            if (request.event.kind === 'undefined') request.error = new Error('noted');
          },
          onError: async (request: Req) => {
            if (isIdemError(request.error)) return;
            await sleep(Math.random() * 3);
            throw 'failed';
          },
        });
      const kinds = ['throw', 'undefined', 'early'];
      const events = Array.from({ length: 60 }, (_, i) => ({
        id: `mix-${name}-${i}`,
        kind: kinds[i % 3] as string,
      }));
      await Promise.all(events.map((e) => settle(handler(e, fakeContext(10_000)))));
      const retries = await Promise.all(events.map((e) => settle(handler(e, fakeContext(10_000)))));
      const want = events.map((e) =>
        e.kind === 'throw'
          ? { value: `ok-${e.id}` }
          : e.kind === 'early'
            ? { value: { early: e.id } }
            : { value: undefined },
      );
      expect([name, retries]).toEqual([name, want]);
      expect([name, events.map((e) => runs.get(e.id))]).toEqual([
        name,
        events.map((e) => (e.kind === 'throw' ? 2 : 1)),
      ]);
    }
  });
});
