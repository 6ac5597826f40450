import { OutcomeNotRecordedError } from '@idem/core';
import { expect, it } from 'vitest';
import { functionScope, idempotency, isIdemError } from '../src/index.js';
import {
  fakeContext,
  flaky,
  interposeErrorAccessor as interpose,
  settle,
  sleep,
  useEnv,
  withoutCallSites,
} from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// lamfix: idempotency() tells Middy's own write of request.error (its catch in `runRequest`, or
// its rethrow) from a hook's by the writer's call site: the function two frames above its own
// `before` is Middy's `runRequest`, the one above that `runMiddlewares`, which calls every hook.

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;
type Hook = (request: Req) => unknown;
type Mw = { before?: Hook; after?: Hook; onError?: Hook };

/** Calls `handler` with `id` until it is no longer refused as in progress (at most ~1 s). */
async function retryWhileHeld(handler: (e: Ev) => Promise<unknown>, id: string) {
  let answer = await settle(handler({ id }));
  for (let i = 0; i < 20 && /progress/i.test(String(answer.error)); i++) {
    await sleep(50);
    answer = await settle(handler({ id }));
  }
  return answer;
}

/** A handler that returns 'charged'; `runs()` counts. */
function charging() {
  let count = 0;
  return {
    run: async () => {
      count += 1;
      return 'charged';
    },
    runs: () => count,
  };
}

/** A response validator (an `after` hook) that refuses every response. */
const invalidResponse = async () => {
  throw new Error('response invalid');
};

/**
 * `onError` hooks that end the invocation with no hook of idempotency() after them (an idem
 * error, a retry's `InProgressError` or `OutcomeNotRecordedError`, goes out as it is).
 */
const rethrows: Record<string, (request: Req) => Promise<unknown>> = {
  same: async (request) => {
    if (isIdemError(request.error)) return;
    throw request.error;
  },
  wrapped: async (request) => {
    if (isIdemError(request.error)) return;
    throw new Error('wrapped', { cause: request.error });
  },
  string: async (request) => {
    if (isIdemError(request.error)) return;
    throw 'failed'; // (Middy's `e.originalError = ...` then throws a TypeError)
  },
  undefined: async (request) => {
    if (isIdemError(request.error)) return;
    throw undefined;
  },
};

describeMiddy('lamfix: Middy, whose write of request.error (redis)', ({ major, middy }) => {
  const env = useEnv('redis');
  const idem = (prefix = '') =>
    idempotency({ scope: functionScope, store: env().store, key: (e: Ev) => `${prefix}${e.id}` });
  const call = (h: (e: Ev, c: ReturnType<typeof fakeContext>) => Promise<unknown>) => (e: Ev) =>
    h(e, fakeContext(10_000));

  // The lamrev2 finding 'handler threw, a later `onError` rethrows' without the freeze: the key
  // was held until its lease ended (10 s here); it is released at Middy's catch now. (With the
  // freeze it stays open: see lamrev2.test.ts.)
  it('without idem.last: the handler throws, a later `onError` rethrows (any value): released at once, the retry runs', async () => {
    for (const [name, onError] of Object.entries(rethrows)) {
      const h = flaky();
      const handler = call(middy(h.run).use(idem()).use({ onError }));
      const first = await settle(handler({ id: `rethrow-${name}` }));
      expect(first).toHaveProperty('error');
      expect(await retryWhileHeld(handler, `rethrow-${name}`)).toEqual({ value: 'ok' });
      expect(await settle(handler({ id: `rethrow-${name}` }))).toEqual({ value: 'ok' });
      expect(h.runs()).toBe(2);
    }
  });

  it('the same with idempotency() after a `before` that awaits, and with two idempotency() (two keys): every key released', async () => {
    const awaiting: Mw = {
      before: async () => {
        await sleep(2);
      },
    };
    for (const layout of ['after-awaiting-before', 'two'] as const) {
      const h = flaky();
      let handler: Req = middy(h.run);
      if (layout === 'two') handler = handler.use(idem('outer-')).use(idem('inner-'));
      else handler = handler.use(awaiting).use(idem());
      handler = handler.use({ onError: rethrows.string });
      const id = `layout-${layout}`;
      expect(await settle(handler({ id }, fakeContext(10_000)))).toHaveProperty('error');
      expect([layout, await retryWhileHeld(call(handler), id)]).toEqual([layout, { value: 'ok' }]);
      expect(h.runs()).toBe(2);
    }
  });

  it('without idem.last: the handler returned, a later `after` throws, a later `onError` rethrows: a marker, one run', async () => {
    for (const [name, onError] of Object.entries(rethrows)) {
      const h = charging();
      const handler = call(middy(h.run).use(idem()).use({ after: invalidResponse, onError }));
      expect(await settle(handler({ id: `returned-${name}` }))).toHaveProperty('error');
      const retry = await retryWhileHeld(handler, `returned-${name}`);
      expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
      expect(h.runs()).toBe(1);
    }
  });

  // The other side, the one that must never go wrong: the handler returned `undefined` and the
  // first `after` hook writes a catch-like pair in Middy's step of that return (or later), in
  // any way. It is a hook's write: never taken for Middy's catch (no release, no second run).
  it("held: the handler returns undefined, the first `after` writes a catch-like pair (direct, a helper, Reflect.set, Object.assign, after an await): never Middy's catch, one run", async () => {
    const note = (request: Req) => {
      request.response = undefined;
      request.error = new Error('noted');
    };
    const writers: Record<string, (request: Req) => unknown> = {
      direct: (request) => {
        request.response = undefined;
        request.error = new Error('noted');
      },
      helper: (request) => note(request),
      reflect: (request) => {
        Reflect.set(request, 'response', undefined);
        Reflect.set(request, 'error', new Error('noted'));
      },
      assign: (request) => {
        Object.assign(request, { response: undefined, error: new Error('noted') });
      },
      awaited: async (request) => {
        await sleep(2);
        note(request);
      },
    };
    for (const [name, write] of Object.entries(writers)) {
      for (const laterThrows of [false, true]) {
        let runs = 0;
        const handler = call(
          middy(async () => {
            runs += 1;
            return undefined;
          })
            .use(idem())
            .use({
              after: async () => {
                if (laterThrows) throw 'invalid response'; // (a string: Middy tags nothing)
              },
            })
            .use({ after: write }),
        );
        const id = `hook-pair-${name}-${laterThrows}`;
        const first = await settle(handler({ id }));
        const retry = await settle(handler({ id }));
        if (laterThrows) {
          expect(first).toEqual({ error: 'invalid response' });
          expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
        } else {
          expect([first, retry]).toEqual([{ value: undefined }, { value: undefined }]);
        }
        expect(runs).toBe(1);
      }
    }
  });

  // A later middleware that puts its own accessor on request.error (chaining to idempotency()'s)
  // sits between Middy and the watch: the writer is not known, the writes alone decide.
  // On Middy 7.7+ (7 here) the handler's throw is taken for a hook's write: the retry gets
  // OutcomeNotRecordedError (MEDIUM, left open: lamrev23-review.test.ts, README "Known gaps").
  (major === 7 ? it.fails : it)(
    'held: a later middleware with its own accessor on request.error, the handler throws: released by idempotency()`s onError, the retry runs',
    async () => {
      const h = flaky();
      const threw = call(middy(h.run).use(idem()).use(interpose));
      expect(await settle(threw({ id: 'interposed-threw' }))).toHaveProperty('error');
      expect(await settle(threw({ id: 'interposed-threw' }))).toEqual({ value: 'ok' });
      expect(h.runs()).toBe(2);
    },
  );

  it('held: a later middleware with its own accessor on request.error, the handler returns, a later `after` throws: a not-recorded marker, one run', async () => {
    const c = charging();
    const returned = call(middy(c.run).use(idem()).use({ after: invalidResponse }).use(interpose));
    expect(await settle(returned({ id: 'interposed-returned' }))).toHaveProperty('error');
    const retry = await settle(returned({ id: 'interposed-returned' }));
    expect(retry.error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(c.runs()).toBe(1);
  });

  it("held: Error.prepareStackTrace and Error.stackTraceLimit are left as they were (a user's own, a limit of 0 included)", async () => {
    const prepareBefore = Object.getOwnPropertyDescriptor(Error, 'prepareStackTrace');
    const limitBefore = Error.stackTraceLimit;
    const mine = (error: Error) => `mine: ${error.message}`;
    try {
      Error.prepareStackTrace = mine;
      Error.stackTraceLimit = 0;
      const h = flaky();
      const handler = call(middy(h.run).use(idem()).use({ onError: rethrows.string }));
      expect(await settle(handler({ id: 'globals' }))).toHaveProperty('error');
      expect(Error.prepareStackTrace).toBe(mine);
      expect(Error.stackTraceLimit).toBe(0);
      expect(new Error('x').stack).toBe('mine: x');
      // (call sites were still read: released at once, with a limit of 0 set by the user)
      expect(await retryWhileHeld(handler, 'globals')).toEqual({ value: 'ok' });
      expect(h.runs()).toBe(2);
    } finally {
      if (prepareBefore) Object.defineProperty(Error, 'prepareStackTrace', prepareBefore);
      else delete (Error as { prepareStackTrace?: unknown }).prepareStackTrace;
      Error.stackTraceLimit = limitBefore;
    }
  });

  it('held (the fallback): without call sites, the handler throws, a later `onError` throws a string: held, never a second run while held', async () => {
    await withoutCallSites(async () => {
      const h = flaky();
      const handler = call(middy(h.run).use(idem()).use({ onError: rethrows.string }));
      expect(await settle(handler({ id: 'fallback-string' }))).toHaveProperty('error');
      await sleep(100);
      const retry = await settle(handler({ id: 'fallback-string' }));
      expect(String(retry.error)).toMatch(/progress/i);
      expect(h.runs()).toBe(1);
    });
  });
});
