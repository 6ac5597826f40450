import type { IdempotencyStore } from '@idem/core';
import type { MiddlewareObj } from '@middy/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { functionScope, idempotency, idempotentTimeoutResponse } from '../src/index.js';
import { type Env, fakeContext, openEnv } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// rev12b: idem.last as a mitigation, Lambda's freeze on each decision path, and Middy's
// timeoutEarly together with early answers.

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Lambda's freeze (as in lamrev2): owner writes take `ms`; once `freeze()` is called (the
 * invocation answered), a write that has not reached the store never lands.
 */
function freezable(store: IdempotencyStore, ms: number) {
  let frozen = false;
  const wrapped = new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (
        (prop === 'complete' || prop === 'release' || prop === 'extend') &&
        typeof v === 'function'
      ) {
        return async (...args: unknown[]) => {
          await sleep(ms);
          if (frozen) return new Promise(() => {});
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return {
    store: wrapped,
    freeze() {
      frozen = true;
    },
    thaw() {
      frozen = false;
    },
  };
}

const settle = (p: Promise<unknown>) =>
  p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

describeMiddy('rev12b: idem.last, freeze, timeouts (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  it('held: with idem.last used last, a handler returning undefined and an `after` noting request.error: no second run', async () => {
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      return undefined;
    })
      .use(idem)
      .use({
        after: async (request: Req) => {
          request.error = new Error('soft');
        },
      })
      .use(idem.last);
    for (let i = 0; i < 3; i++) {
      const id = `last-soft-${i}`;
      runs = 0;
      expect(await handler({ id }, fakeContext(10_000))).toBeUndefined();
      expect(await handler({ id }, fakeContext(10_000))).toBeUndefined();
      expect(runs).toBe(1);
    }
  });

  it('held (freeze): with idem.last, a handler throwing undefined and a later `onError` rethrowing: the key is free for the retry', async () => {
    for (let i = 0; i < 2; i++) {
      const f = freezable(env.store, 150);
      let runs = 0;
      const idem = idempotency({ scope: functionScope, store: f.store, key: (e: Ev) => e.id });
      const handler = middy(async () => {
        runs += 1;
        if (runs === 1) throw undefined;
        return 'ok';
      })
        .use(idem)
        .use({
          onError: async (request: Req) => {
            throw request.error ?? new Error('wrapped undefined');
          },
        })
        .use(idem.last);
      const id = `last-undef-${i}`;
      await expect(handler({ id }, fakeContext(5_000))).rejects.toThrow('wrapped undefined');
      f.freeze();
      await sleep(250);
      f.thaw();
      expect(await handler({ id }, fakeContext(10_000))).toBe('ok');
      expect(runs).toBe(2);
    }
  });

  it('held (freeze): `.use([idem, cache])` where the cache answers early from `before`: the key is free once the answer is out', async () => {
    const f = freezable(env.store, 150);
    let runs = 0;
    let cached = true;
    const idem = idempotency({ scope: functionScope, store: f.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      return 'fresh';
    }).use([
      idem,
      {
        before: async () => (cached ? 'cached' : undefined),
      },
      idem.last,
    ]);
    expect(await handler({ id: 'cache' }, fakeContext(5_000))).toBe('cached');
    f.freeze();
    await sleep(250);
    f.thaw();
    cached = false;
    expect(await handler({ id: 'cache' }, fakeContext(10_000))).toBe('fresh');
    expect(runs).toBe(1);
  });

  // rev12f decision 2: without idem.last a throw then a later onError's early answer is recorded (the documented cost); this test keeps the release, with idem.last
  it('held (freeze): the handler threw, an `onError` answers early with a 500: the release landed before the answer', async () => {
    const f = freezable(env.store, 150);
    let runs = 0;
    const idemL0 = idempotency({ scope: functionScope, store: f.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(idemL0)
      .use({ onError: async () => ({ statusCode: 500 }) })
      .use(idemL0.last);
    expect(await handler({ id: 'err-early' }, fakeContext(5_000))).toEqual({ statusCode: 500 });
    f.freeze();
    await sleep(250);
    f.thaw();
    expect(await handler({ id: 'err-early' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  it('held (freeze): handler returned, a later `after` answers early with a promise: recorded before the answer', async () => {
    const f = freezable(env.store, 150);
    let runs = 0;
    const handler = middy(async () => {
      runs += 1;
      return 'raw';
    })
      .use(idempotency({ scope: functionScope, store: f.store, key: (e: Ev) => e.id }))
      .use({
        after: async (request: Req) => {
          const raw = request.response;
          request.earlyResponse = sleep(20).then(() => ({ wrapped: raw }));
        },
      });
    expect(await handler({ id: 'early-p' }, fakeContext(5_000))).toEqual({ wrapped: 'raw' });
    f.freeze();
    await sleep(250);
    f.thaw();
    expect(await handler({ id: 'early-p' }, fakeContext(10_000))).toEqual({ wrapped: 'raw' });
    expect(runs).toBe(1);
  });

  it('held: a wrapped timeout answer that a later `after` answers early with: released, not recorded', async () => {
    let runs = 0;
    const handler = middy(
      async () => {
        runs += 1;
        await sleep(runs === 1 ? 400 : 0);
        return { statusCode: 200 };
      },
      {
        timeoutEarlyInMillis: 150,
        timeoutEarlyResponse: idempotentTimeoutResponse(() => ({ statusCode: 504 })),
      },
    )
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({ after: async (request: Req) => ({ ...request.response, serialized: true }) });
    expect(await handler({ id: 'to-early' }, fakeContext(300))).toEqual({
      statusCode: 504,
      serialized: true,
    });
    await sleep(400);
    expect(await handler({ id: 'to-early' }, fakeContext(10_000))).toEqual({
      statusCode: 200,
      serialized: true,
    });
    expect(runs).toBe(2);
  });

  it('held: the result / error the caller gets equals Middy alone for each path (no idempotency vs idempotency)', async () => {
    const paths: Record<string, { handler: () => Promise<unknown>; mw: object }> = {
      value: { handler: async () => ({ a: 1 }), mw: { after: async () => {} } },
      undef: { handler: async () => undefined, mw: { after: async () => {} } },
      nul: { handler: async () => null, mw: { after: async () => {} } },
      afterEarly: { handler: async () => 1, mw: { after: async () => 2 } },
      afterThrow: {
        handler: async () => 1,
        mw: {
          after: async () => {
            throw new Error('v');
          },
        },
      },
      onErrorEarly: {
        handler: async () => {
          throw new Error('h');
        },
        mw: { onError: async () => 'handled' },
      },
      onErrorUndefined: {
        handler: async () => {
          throw new Error('h');
        },
        mw: {
          onError: async (r: Req) => {
            r.earlyResponse = undefined;
          },
        },
      },
      onErrorRethrow: {
        handler: async () => {
          throw new Error('h');
        },
        mw: {
          onError: async (r: Req) => {
            throw r.error;
          },
        },
      },
    };
    for (const [name, { handler, mw }] of Object.entries(paths)) {
      const alone = await settle(
        middy(handler).use(mw as MiddlewareObj)({ id: name }, fakeContext(10_000)),
      );
      const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
      const withIdem = await settle(
        middy(handler)
          .use(idem)
          .use(mw as MiddlewareObj)
          .use(idem.last)({ id: name }, fakeContext(10_000)),
      );
      expect({ name, ...withIdem }).toEqual({ name, ...alone });
    }
  });

  // FIXED (was FINDING LOW): Middy's read of the answer gets a promise; a second read in the same run is the onError chain, whose promise rejects with request.error once the write has landed.
  // Was: FINDING (LOW): Middy's catch of a thrown `undefined` (a validator or handler throwing
  // `undefined`) followed by an `onError` that sets `earlyResponse = undefined`: the getter
  // hands Middy `undefined` at once while the decision's write is in flight (middy.ts: "Maybe
  // Middy's catch of a thrown undefined"), so Middy rethrows before the write lands. Lambda
  // freezes: after the handler RETURNED and an `after` threw undefined, the not-recorded marker
  // never lands and the retry after the lease runs the handler a SECOND time; after the handler
  // threw undefined, the release never lands and retries get InProgressError until the lease
  // ends. (With idem.last the write is awaited: see the held test above.) Fix: in that branch
  // return the same kind of promise as `rethrowAfter` (rejecting with `request.error` once the
  // write has landed) when the copy happens in the onError chain, e.g. told by Middy's catch
  // guess (`resetGuess !== undefined`) having been made before any `after` hook ran.
  it('(freeze) handler returned, `after` throws undefined, onError earlyResponse = undefined: no second run after the lease', async () => {
    for (let i = 0; i < 2; i++) {
      const f = freezable(env.store, 150);
      let runs = 0;
      const handler = middy(async () => {
        runs += 1;
        return 'charged';
      })
        .use(idempotency({ scope: functionScope, store: f.store, key: (e: Ev) => e.id }))
        .use({
          after: async () => {
            throw undefined;
          },
          onError: async (request: Req) => {
            request.earlyResponse = undefined;
          },
        });
      const id = `undef-after-${i}`;
      expect(await settle(handler({ id }, fakeContext(600)))).toEqual({ error: undefined });
      f.freeze();
      await sleep(800);
      f.thaw();
      await handler({ id }, fakeContext(10_000)).catch(() => {});
      expect(runs).toBe(1);
    }
  });

  // FIXED (was FINDING LOW): the second case of the finding above: the same promise, the release lands before the rethrow.
  // rev12f decision 2: without idem.last a throw then a later onError's early answer is recorded (the documented cost); this test keeps the release, with idem.last
  it('(freeze) handler throws undefined, onError earlyResponse = undefined: the key is free for the retry', async () => {
    const f = freezable(env.store, 150);
    let runs = 0;
    const idemL0 = idempotency({ scope: functionScope, store: f.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw undefined;
      return 'ok';
    })
      .use(idemL0)
      .use({
        onError: async (request: Req) => {
          request.earlyResponse = undefined;
        },
      })
      .use(idemL0.last);
    expect(await settle(handler({ id: 'undef-h' }, fakeContext(5_000)))).toEqual({
      error: undefined,
    });
    f.freeze();
    await sleep(250);
    f.thaw();
    expect(await handler({ id: 'undef-h' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });
});
