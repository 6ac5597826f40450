import { type IdempotencyStore, OutcomeNotRecordedError } from '@idem/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { functionScope, idempotency } from '../src/index.js';
import { type Env, fakeContext, openEnv } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// rev12b: adversarial review of the Middy idempotency() watch (3755949..ec478bc): how it tells
// Middy's catch, the handler's return and early answers apart.

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A store whose owner writes (complete / release) take `ms` before they start. */
function slowWrites(store: IdempotencyStore, ms: number): IdempotencyStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if ((prop === 'complete' || prop === 'release') && typeof v === 'function') {
        return async (...args: unknown[]) => {
          await sleep(ms);
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

describeMiddy('rev12b: the watch of request.response / request.error (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  // FIXED (was FINDING HIGH): a lone `undefined` then an error write, before the handler is known to have returned, is ambiguous: no decision at the write; idempotency()'s own `after` settles it (returned: recorded).
  // Was: FINDING (HIGH): the handler RETURNS undefined (the usual SQS / SNS / EventBridge handler)
  // and the first `after` hook Middy runs (the middleware used last) writes `request.error` in
  // its synchronous start (a soft error noted for a logger, as in the lamrev2 HIGH). Middy
  // calls that hook in the same synchronous run as its write of the handler's `undefined` to
  // request.response, so the watch sees "response = undefined; error = value" in one run:
  // exactly Middy's catch. It decides release (returned = false); the after chain then ends
  // normally, idempotency()'s `after` sees a decision and records nothing. The caller got a
  // success, the key is free: the retry runs the handler a SECOND time. (lamrev2's fix was
  // tested with a handler returning an object only.) Fix: never decide in the error setter
  // when the only write was a lone `undefined` (ambiguous: the handler's return or the reset);
  // keep it as a guess and decide in the first hook of idempotency() that runs next (its
  // `after` => it returned; its / idem.last's `onError` => catch) or at an early-answer read;
  // or have `idem.last` carry a `before` hook marking the end of the before chain.
  it('handler returns undefined, the first `after` notes request.error (no throw): no second run', async () => {
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      return undefined;
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        after: async (request: Req) => {
          request.error = new Error('soft: slow downstream'); // noted for a logger
        },
      });
    for (let i = 0; i < 3; i++) {
      const id = `undef-soft-${i}`;
      runs = 0;
      expect(await handler({ id }, fakeContext(10_000))).toBeUndefined();
      expect(await handler({ id }, fakeContext(10_000))).toBeUndefined();
      expect(runs).toBe(1);
    }
  });

  it('held (control): the same with a handler returning a value: no second run', async () => {
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      return 'done';
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        after: async (request: Req) => {
          request.error = new Error('soft');
        },
      });
    for (let i = 0; i < 3; i++) {
      const id = `val-soft-${i}`;
      runs = 0;
      expect(await handler({ id }, fakeContext(10_000))).toBe('done');
      expect(await handler({ id }, fakeContext(10_000))).toBe('done');
      expect(runs).toBe(1);
    }
  });

  // FIXED (was FINDING HIGH): the same ambiguity, settled at Middy's read of the early answer: one read (not the onError chain, which reads twice in one run) means the handler returned: recorded.
  // Was: FINDING (HIGH): same root cause, other path: the handler returns undefined, the first
  // `after` clears `request.error = undefined` (lamrev2's "clear stale error" middleware) in
  // its synchronous start: the watch keeps `resetGuess = false` ("maybe Middy's catch of a
  // thrown undefined, nothing returned"). A later `after` then answers early: decideEarly
  // trusts resetGuess over `returned` and RELEASES the key; the caller gets the early answer,
  // the retry runs the handler a second time. Fix: as above; at least `resetGuess` must never
  // be taken once an `after` hook has run (Middy never runs the after chain after a catch).
  it('handler returns undefined, `after` clears request.error, a later `after` answers early: no second run', async () => {
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      return undefined;
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        after: async () => ({ statusCode: 202 }), // answers early (e.g. an SQS -> HTTP adapter)
      })
      .use({
        after: async (request: Req) => {
          request.error = undefined; // clear stale error (runs first)
        },
      });
    for (let i = 0; i < 3; i++) {
      const id = `undef-clear-early-${i}`;
      runs = 0;
      expect(await handler({ id }, fakeContext(10_000))).toEqual({ statusCode: 202 });
      expect(await handler({ id }, fakeContext(10_000))).toEqual({ statusCode: 202 });
      expect(runs).toBe(1);
    }
  });

  it('held (control): handler returns a value, `after` clears error, a later `after` answers early: recorded', async () => {
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      return 'x';
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({ after: async () => ({ statusCode: 202 }) })
      .use({
        after: async (request: Req) => {
          request.error = undefined;
        },
      });
    const id = 'val-clear-early';
    expect(await handler({ id }, fakeContext(10_000))).toEqual({ statusCode: 202 });
    expect(await handler({ id }, fakeContext(10_000))).toEqual({ statusCode: 202 });
    expect(runs).toBe(1);
  });

  // FIXED (lambda21; was FINDING LOW): idempotency() watches Middy's call of the handler (a read
  // of request.event right followed by one of request.context): a write of request.response
  // before it is a `before` hook's, never the handler's return (test/lambda21-call.test.ts).
  // Was: FINDING (LOW; documented in the README as a limitation, but it contradicts the table row
  // "the handler throws: released" and Middy alone): a middleware used after idempotency() (the documented order) whose
  // `before` initialises `request.response` (a default `{ headers: {} }` that the handler's
  // return later replaces) makes the watch take that write as "the handler returned" (sticky).
  // When the handler then THROWS (a transient error), the key gets a not-recorded marker
  // instead of being released: every retry gets OutcomeNotRecordedError and the handler never
  // runs again, where Middy alone would run it at the retry (and the README table promises
  // "the handler throws: released, so a retry runs again"). The same for a later `before` that
  // throws (a validator: the first answer is a 400, the retry an OutcomeNotRecordedError).
  // Fix: a write during the before chain is not the handler's return: e.g. an `idem.last.before`
  // (runs last in the before chain) marking where the handler's write can start, or decide from
  // Middy's read of `request.event` / `request.context` to call the handler.
  // Still open without the companion (lambda2): `idem.last` now has a `before` hook (it runs
  // last in the before chain) that forgets such writes, so with `.use(idem.last)` the first
  // case is released (test/lambda2-ambiguous.test.ts); the second (a later `before` throwing
  // before idem.last's `before` runs) stays a marker.
  it('a later `before` initialising request.response, the handler throws: released, the retry runs', async () => {
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return { statusCode: 200 };
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        before: async (request: Req) => {
          request.response = { headers: {} }; // default response, replaced by the handler's
        },
      });
    const id = 'before-init';
    await expect(handler({ id }, fakeContext(10_000))).rejects.toThrow('transient');
    const retry = await handler({ id }, fakeContext(10_000)).catch((e: unknown) => e);
    expect(retry).not.toBeInstanceOf(OutcomeNotRecordedError);
    expect(retry).toEqual({ statusCode: 200 });
    expect(runs).toBe(2);
  });

  it('a later `before` initialising request.response, then a later `before` rejecting the input: the retry gets the same rejection', async () => {
    let runs = 0;
    let valid = false;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      return 'ok';
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        before: async (request: Req) => {
          request.response = { headers: {} };
        },
      })
      .use({
        before: async () => {
          if (!valid) throw new Error('400 invalid input');
        },
      });
    const id = 'before-init-validator';
    await expect(handler({ id }, fakeContext(10_000))).rejects.toThrow('400 invalid input');
    valid = true; // (e.g. the validator's schema was fixed, or a dependency came back)
    expect(await handler({ id }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(1);
  });

  // FIXED (was FINDING LOW): writes of request.response while the catch-like pair is ambiguous are not taken as the handler's return; idempotency()'s onError settles it as Middy's catch: released.
  // Was: FINDING (LOW; the README documents this "looks like a return" for an onError writing
  // request.response without idem.last): the handler throws `undefined` (rare, but the lamrev2 guard exists for it),
  // and an `onError` error handler in the classic Middy style writes `request.response = 500`
  // (no earlyResponse): that write clears `resetGuess` and is taken as the handler's return,
  // so idempotency()'s `onError` leaves a not-recorded marker instead of releasing: every
  // retry gets OutcomeNotRecordedError (here turned into the same 500 by that onError), the
  // handler never runs again. Fix: no write after
  // Middy's catch (or its guess) is a handler return: `returned` must only be set before it.
  it('handler throws undefined, an `onError` writes a 500 response: released, the retry runs', async () => {
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      if (runs === 1) throw undefined;
      return 'ok';
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        onError: async (request: Req) => {
          request.response = { statusCode: 500 };
        },
      });
    const id = 'undef-500';
    expect(await handler({ id }, fakeContext(10_000))).toEqual({ statusCode: 500 });
    const retry = await handler({ id }, fakeContext(10_000)).catch((e: unknown) => e);
    expect(retry).toBe('ok');
    expect(runs).toBe(2);
  });

  it('held: handler throws an Error, an `onError` writes a 500 response: released, the retry runs', async () => {
    let runs = 0;
    const handler = middy(async (_e: Ev) => {
      runs += 1;
      if (runs === 1) throw new Error('x');
      return 'ok';
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        onError: async (request: Req) => {
          request.response = { statusCode: 500 };
        },
      });
    const id = 'err-500';
    expect(await handler({ id }, fakeContext(10_000))).toEqual({ statusCode: 500 });
    expect(await handler({ id }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  // Was: FINDING (LOW; the README says such a read "may get the promise", not that the decoration is
  // silently lost): a `before` hook that answers early and writes request.response itself
  // (`request.response = request.earlyResponse = cached`), then awaits (a metrics call) and
  // decorates `request.response`: with a slow store write, that later read gives a PROMISE
  // (the release in flight), so `request.response.headers` is undefined and the hook throws a
  // TypeError where Middy alone works; Middy's onError chain then copies the still-own
  // earlyResponse: the caller silently gets the answer WITHOUT the decoration. (The synchronous decoration is covered by lamrev2.)
  // Fix: hand out the promise only to Middy's read (e.g. only after the hook's promise has
  // settled: a flag set in a `.then` of nothing the hook can observe is not possible, so prefer
  // deciding at the copy and awaiting in the early read only once per copy).
  // FIXED (was FINDING LOW): a read once a turn of the event loop has passed since the last
  // copy of an early answer is a hook's (Middy reads its copy in the microtasks after it): it
  // gets the value; Middy's own read still waits for the write (see the test after this one).
  it('a later `before` answering early, writing and decorating request.response after an await: works as without idempotency()', async () => {
    const store = slowWrites(env.store, 150);
    const handler = middy(async () => 'handler')
      .use(idempotency({ scope: functionScope, store, key: (e: Ev) => e.id }))
      .use({
        before: async (request: Req) => {
          const cached = { statusCode: 200, headers: {} as Record<string, string> };
          request.earlyResponse = cached;
          request.response = cached;
          await sleep(5); // a metrics call
          request.response.headers['x-cache'] = 'hit';
        },
      });
    expect(await handler({ id: 'deco-async' }, fakeContext(10_000))).toEqual({
      statusCode: 200,
      headers: { 'x-cache': 'hit' },
    });
  });

  it('the same decorated early answer with slow writes: the answer comes once the key is free', async () => {
    const store = slowWrites(env.store, 150);
    let runs = 0;
    let cached = true;
    const handler = middy(async () => {
      runs += 1;
      return { statusCode: 200, headers: { 'x-cache': 'miss' } };
    })
      .use(idempotency({ scope: functionScope, store, key: (e: Ev) => e.id }))
      .use({
        before: async (request: Req) => {
          if (!cached) return;
          const hit = { statusCode: 200, headers: {} as Record<string, string> };
          request.earlyResponse = hit;
          request.response = hit;
          await sleep(5);
          request.response.headers['x-cache'] = 'hit';
        },
      });
    expect(await handler({ id: 'deco-free' }, fakeContext(10_000))).toEqual({
      statusCode: 200,
      headers: { 'x-cache': 'hit' },
    });
    cached = false; // at once: the release has landed (no InProgressError)
    expect(await handler({ id: 'deco-free' }, fakeContext(10_000))).toEqual({
      statusCode: 200,
      headers: { 'x-cache': 'miss' },
    });
    expect(runs).toBe(1);
  });
});
