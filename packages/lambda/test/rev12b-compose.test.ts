import { type IdempotencyStore, InvalidInputError, OutcomeNotRecordedError } from '@idem/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import { functionScope, idempotency, idempotentTimeoutResponse } from '../src/index.js';
import { type Env, fakeContext, openEnv, twoMiddlewares } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// rev12b: compositions (two idempotency(), idem.last misplaced, .use([a, b])), concurrency on
// one handler instance, odd throws and answers, Middy's timeoutEarly, failing stores.

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Owner writes (complete / release) take `ms`; `fail` makes them reject, `hang` never settle. */
function faulty(store: IdempotencyStore, ms: number, mode: 'ok' | 'fail' | 'hang' = 'ok') {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if ((prop === 'complete' || prop === 'release') && typeof v === 'function') {
        return async (...args: unknown[]) => {
          await sleep(ms);
          if (mode === 'fail') throw new Error(`store ${String(prop)} failed`);
          if (mode === 'hang') return new Promise(() => {});
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

/** Collects unhandled rejections while `fn` runs (and a little after). */
async function unhandledDuring(fn: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const on = (reason: unknown) => seen.push(reason);
  process.on('unhandledRejection', on);
  try {
    await fn();
    await sleep(50);
  } finally {
    process.off('unhandledRejection', on);
  }
  return seen;
}

const settle = (p: Promise<unknown>) =>
  p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

describeMiddy('rev12b: compositions and failures (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  it('held: two idempotency() instances (two keys) record, replay, release together', async () => {
    let runs = 0;
    const [outer, inner] = twoMiddlewares(env.store, 'o:', 'i:');
    const handler = middy(async (e: Ev) => {
      runs += 1;
      if (e.id.startsWith('t') && runs === 1) throw new Error('transient');
      return { n: runs };
    })
      .use(outer)
      .use(inner)
      .use([outer.last, inner.last]);
    expect(await handler({ id: 'a' }, fakeContext(10_000))).toEqual({ n: 1 });
    expect(await handler({ id: 'a' }, fakeContext(10_000))).toEqual({ n: 1 });
    expect(runs).toBe(1);
    runs = 0;
    await expect(handler({ id: 't' }, fakeContext(10_000))).rejects.toThrow('transient');
    expect(await handler({ id: 't' }, fakeContext(10_000))).toEqual({ n: 2 });
    expect(await handler({ id: 't' }, fakeContext(10_000))).toEqual({ n: 2 });
    expect(runs).toBe(2);
  });

  // FIXED (was FINDING MEDIUM): the first read of an early answer hands out one promise (handled), and every read of that value gets the same one.
  // Was: FINDING (MEDIUM): two idempotency() instances (an outer tenant-wide key and an inner
  // per-order key, both acquired) and an `onError` that sets `earlyResponse = undefined` (the
  // "rethrow" of lamrev2's HIGH fix). Middy reads request.response twice (`typeof`, then
  // `return`): the inner watch gets the outer's rethrow PROMISE as the value (not undefined),
  // so it answers `decision.then(() => value)`, a new promise per read, that rejects; the one
  // from the `typeof` read is dropped: an UNHANDLED REJECTION (the Lambda Node runtime fails
  // the invocation and exits the process on one). Fix: unwrap an inner read that is the rethrow
  // of an outer watch (share the rethrow per request, e.g. a WeakMap request -> rethrow), or
  // cache the promise handed out per copy and `.catch(() => {})` a copy of it.
  // rev12f decision 2: without idem.last a throw then a later onError's early answer is recorded (the documented cost); this test keeps the release, with idem.last
  it('two idempotency() instances, onError earlyResponse = undefined: the error goes out, no unhandled rejection', async () => {
    let runs = 0;
    const [outer, inner] = twoMiddlewares(env.store, 'o:', 'i:');
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(outer)
      .use(inner)
      .use({
        onError: async (request: Req) => {
          request.earlyResponse = undefined;
        },
      })
      .use(inner.last)
      .use(outer.last);
    const unhandled = await unhandledDuring(async () => {
      const first = await settle(handler({ id: 'two-rethrow' }, fakeContext(10_000)));
      expect((first as { error: Error }).error?.message).toBe('transient');
    });
    expect(unhandled).toEqual([]);
    expect(await handler({ id: 'two-rethrow' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  // FIXED (was FINDING LOW): a timeout answer is marked for each invocation whose handler is running (each takes its own mark).
  // Was: FINDING (LOW): two idempotency() instances and a value-returning Middy timeout wrapped in
  // idempotentTimeoutResponse() with a PRIMITIVE answer ('timed out'): the primitive mark is
  // taken once, by the first watch that sees Middy's write (the outer one, chained under the
  // inner), so the inner takes that answer as the handler's return and RECORDS the timeout
  // answer as its key's outcome while the handler is still running (the lamrev2 MEDIUM back for
  // the inner key). Fix: mark primitives per write (e.g. keep the mark until the end of the
  // microtask run instead of consuming it at the first take), or per request.
  // Changed by rev12f decision 1: a primitive timeout answer is refused (InvalidInputError):
  // Middy rejects with it, both keys are released.
  it('two idempotency() instances, a primitive timeout answer: refused, neither key records anything', async () => {
    let runs = 0;
    const [outer, inner] = twoMiddlewares(env.store, 'o:', 'i:');
    const handler = middy(
      async () => {
        runs += 1;
        await sleep(runs === 1 ? 400 : 0);
        return 'done';
      },
      {
        timeoutEarlyInMillis: 150,
        timeoutEarlyResponse: idempotentTimeoutResponse(() => 'timed out'),
      },
    )
      .use(outer)
      .use(inner);
    await expect(handler({ id: 'two-timeout' }, fakeContext(300))).rejects.toBeInstanceOf(
      InvalidInputError,
    );
    await sleep(400);
    expect(await handler({ id: 'two-timeout' }, fakeContext(10_000))).toBe('done');
    expect(runs).toBe(2);
  });

  it('held: two instances, a wrapped OBJECT timeout answer: both keys released', async () => {
    let runs = 0;
    const [outer, inner] = twoMiddlewares(env.store, 'o:', 'i:');
    const handler = middy(
      async () => {
        runs += 1;
        await sleep(runs === 1 ? 400 : 0);
        return 'done';
      },
      {
        timeoutEarlyInMillis: 150,
        timeoutEarlyResponse: idempotentTimeoutResponse(() => ({ statusCode: 504 })),
      },
    )
      .use(outer)
      .use(inner);
    expect(await handler({ id: 'two-timeout-o' }, fakeContext(300))).toEqual({ statusCode: 504 });
    await sleep(400);
    expect(await handler({ id: 'two-timeout-o' }, fakeContext(10_000))).toBe('done');
    expect(runs).toBe(2);
  });

  // FIXED (was FINDING LOW): object answers are marked like primitives: for the running invocations, until the next macrotask.
  // Was: FINDING (LOW): idempotentTimeoutResponse() marks an object answer for the life of the
  // process (a WeakSet by identity). With a shared constant (`const GATEWAY_TIMEOUT = {
  // statusCode: 504 }`, returned both by the wrapped timeout answer and by the handler when
  // its own downstream call times out), once Middy's timeout has fired once, every later
  // handler RETURN of that constant is taken as Middy's timeout: the key is released although
  // the handler ran (a retry runs it again). Fix: mark the answer for the write Middy makes
  // right after the call only (as for primitives), or compare with the request being timed out.
  it('a constant object used as timeout answer and handler return: a later handler return is recorded', async () => {
    const GATEWAY_TIMEOUT = { statusCode: 504 };
    let runs = 0;
    let slow = true;
    const handler = middy(
      async () => {
        runs += 1;
        if (slow) await sleep(400);
        return GATEWAY_TIMEOUT; // its own downstream timed out: a final answer
      },
      {
        timeoutEarlyInMillis: 150,
        timeoutEarlyResponse: idempotentTimeoutResponse(() => GATEWAY_TIMEOUT),
      },
    ).use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }));
    expect(await handler({ id: 'const-1' }, fakeContext(300))).toBe(GATEWAY_TIMEOUT);
    await sleep(300);
    slow = false;
    runs = 0;
    expect(await handler({ id: 'const-2' }, fakeContext(10_000))).toEqual(GATEWAY_TIMEOUT);
    expect(await handler({ id: 'const-2' }, fakeContext(10_000))).toEqual(GATEWAY_TIMEOUT);
    expect(runs).toBe(1);
  });

  it('held: idem.last misplaced (first, twice, of another instance, alone) changes nothing', async () => {
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const other = idempotency({
      scope: functionScope,
      store: env.store,
      key: (e: Ev) => `x:${e.id}`,
    });
    const base = async (e: Ev) => {
      runs += 1;
      if (e.id.startsWith('t') && runs === 1) throw new Error('transient');
      return { n: runs };
    };
    const variants = [
      middy(base).use(idem.last).use(idem),
      middy(base).use(idem).use(idem.last).use(idem.last),
      middy(base).use(idem).use(other.last),
      middy(base).use([idem, { onError: async (r: Req) => void r }, idem.last]),
    ];
    for (const [v, h] of variants.entries()) {
      runs = 0;
      expect(await h({ id: `ok-${v}` }, fakeContext(10_000))).toEqual({ n: 1 });
      expect(await h({ id: `ok-${v}` }, fakeContext(10_000))).toEqual({ n: 1 });
      expect(runs).toBe(1);
      runs = 0;
      await expect(h({ id: `t-${v}` }, fakeContext(10_000))).rejects.toThrow('transient');
      expect(await h({ id: `t-${v}` }, fakeContext(10_000))).toEqual({ n: 2 });
      expect(runs).toBe(2);
    }
    // without idempotency(): a no-op
    const alone = middy(async () => 'x').use(idem.last);
    expect(await alone({ id: 'alone' }, fakeContext(10_000))).toBe('x');
    await expect(
      middy(async () => {
        throw new Error('e');
      }).use(idem.last)({ id: 'alone' }, fakeContext(10_000)),
    ).rejects.toThrow('e');
  });

  // rev12f decision 2: without idem.last a throw then a later onError's early answer is recorded (the documented cost); this test keeps the release, with idem.last
  it('held: 24 concurrent invocations of one handler instance, mixed paths, distinct keys (slow writes)', async () => {
    const store = faulty(env.store, 30);
    const runs = new Map<string, number>();
    const idemL0 = idempotency({ scope: functionScope, store, key: (e: Ev) => e.id });
    const handler = middy(async (e: Ev) => {
      runs.set(e.id, (runs.get(e.id) ?? 0) + 1);
      await sleep(Math.floor(Math.random() * 20));
      const n = runs.get(e.id);
      if (e.id.startsWith('throw') && n === 1) throw new Error(`t:${e.id}`);
      if (e.id.startsWith('undef')) return undefined;
      return { id: e.id, n };
    })
      .use(idemL0)
      .use({
        after: async (request: Req) => {
          await sleep(Math.floor(Math.random() * 10));
          if (request.event.id.startsWith('early')) return { early: request.event.id };
          if (request.event.id.startsWith('bad')) throw new Error('invalid');
          return undefined;
        },
      })
      .use({
        onError: async (request: Req) => {
          await sleep(Math.floor(Math.random() * 10));
          if (request.event.id.startsWith('throw')) request.earlyResponse = undefined;
        },
      })
      .use(idemL0.last);
    const ids = ['plain', 'undef', 'early', 'bad', 'throw', 'plain2'].flatMap((p) =>
      [0, 1, 2, 3].map((i) => `${p}-${i}`),
    );
    const first = await Promise.all(ids.map((id) => settle(handler({ id }, fakeContext(10_000)))));
    const second = await Promise.all(ids.map((id) => settle(handler({ id }, fakeContext(10_000)))));
    for (const [k, id] of ids.entries()) {
      const a = first[k] as { value?: unknown; error?: Error };
      const b = second[k] as { value?: unknown; error?: Error };
      if (id.startsWith('plain')) {
        expect(a.value).toEqual({ id, n: 1 });
        expect(b.value).toEqual({ id, n: 1 });
      } else if (id.startsWith('undef')) {
        expect(a).toEqual({ value: undefined });
        expect(b).toEqual({ value: undefined });
      } else if (id.startsWith('early')) {
        expect(a.value).toEqual({ early: id });
        expect(b.value).toEqual({ early: id });
      } else if (id.startsWith('bad')) {
        expect(a.error?.message).toBe('invalid');
        expect(b.error).toBeInstanceOf(OutcomeNotRecordedError);
      } else {
        expect(a.error?.message).toBe(`t:${id}`);
        expect(b.value).toEqual({ id, n: 2 });
      }
      expect(runs.get(id)).toBe(id.startsWith('throw') ? 2 : 1);
    }
  });

  it('held: handlers throwing null, a string, a number, a plain object: the same rejection, the key released', async () => {
    for (const [k, thrown] of [null, 'boom', 42, { code: 'E' }, false].entries()) {
      let runs = 0;
      const plain = middy(async () => {
        throw thrown;
      });
      const handler = middy(async () => {
        runs += 1;
        if (runs === 1) throw thrown;
        return 'ok';
      })
        .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
        .use({ onError: async () => {} });
      const alone = await settle(plain({ id: 'x' }, fakeContext(10_000)));
      const got = await settle(handler({ id: `odd-${k}` }, fakeContext(10_000)));
      expect(got).toEqual(alone);
      expect((got as { error: unknown }).error).toBe(thrown);
      expect(await handler({ id: `odd-${k}` }, fakeContext(10_000))).toBe('ok');
      expect(runs).toBe(2);
    }
  });

  it('held: a handler whose promise never settles, Middy timeoutEarly (default throw): TimeoutError, key released', async () => {
    let runs = 0;
    const handler = middy(
      async () => {
        runs += 1;
        if (runs === 1) return new Promise(() => {});
        return 'ok';
      },
      { timeoutEarlyInMillis: 150 },
    ).use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }));
    await expect(handler({ id: 'never' }, fakeContext(300))).rejects.toMatchObject({
      name: 'TimeoutError',
    });
    expect(await handler({ id: 'never' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  it('held: a handler returning a non-promise thenable, and one resolving to a thenable: recorded as its value', async () => {
    let runs = 0;
    const handler = middy((_e: Ev) => {
      runs += 1;
      return {
        // biome-ignore lint/suspicious/noThenProperty: a thenable on purpose
        then: (res: (v: unknown) => void) => setTimeout(() => res({ v: runs }), 5),
      } as never;
    }).use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }));
    expect(await handler({ id: 'thenable' }, fakeContext(10_000))).toEqual({ v: 1 });
    expect(await handler({ id: 'thenable' }, fakeContext(10_000))).toEqual({ v: 1 });
    expect(runs).toBe(1);
  });

  // rev12f decision 2: without idem.last a throw then a later onError's early answer is recorded (the documented cost); this test keeps the release, with idem.last
  it('held: the store release hangs (storeTimeoutMs 300): the error still goes out within a bound', async () => {
    const store = faulty(env.store, 0, 'hang');
    const idemL0 = idempotency({
      scope: functionScope,
      store,
      key: (e: Ev) => e.id,
      storeTimeoutMs: 300,
    });
    const handler = middy(async () => {
      throw new Error('boom');
    })
      .use(idemL0)
      .use({
        onError: async (request: Req) => {
          request.earlyResponse = undefined;
        },
      })
      .use(idemL0.last);
    const t0 = Date.now();
    await expect(handler({ id: 'hang-release' }, fakeContext(10_000))).rejects.toThrow('boom');
    expect(Date.now() - t0).toBeLessThan(1_500);
  });

  it('held: the store complete hangs / fails: the invocation fails with a store error within a bound (never hangs)', async () => {
    for (const mode of ['hang', 'fail'] as const) {
      const store = faulty(env.store, 0, mode);
      const handler = middy(async () => 'v').use(
        idempotency({ scope: functionScope, store, key: (e: Ev) => e.id, storeTimeoutMs: 300 }),
      );
      const t0 = Date.now();
      const got = await settle(handler({ id: `complete-${mode}` }, fakeContext(10_000)));
      expect(got).toHaveProperty('error');
      expect(Date.now() - t0).toBeLessThan(1_500);
    }
  });

  it('held: an early answer from a later `after` whose record fails: the caller gets the store error, no unhandled rejection', async () => {
    const store = faulty(env.store, 0, 'fail');
    const handler = middy(async () => 'v')
      .use(idempotency({ scope: functionScope, store, key: (e: Ev) => e.id, storeTimeoutMs: 300 }))
      .use({ after: async () => ({ early: 1 }) });
    const unhandled = await unhandledDuring(async () => {
      const got = await settle(handler({ id: 'early-fail' }, fakeContext(10_000)));
      expect(got).toHaveProperty('error');
    });
    expect(unhandled).toEqual([]);
  });

  // FINDING (LOW): a plugin that seals the request (`requestStart: Object.seal`, e.g. to catch
  // typos in middlewares) works with Middy alone, but idempotency()'s `before` cannot install
  // its accessors (defineProperty on a non-configurable property): every invocation fails with
  // a TypeError (the key is released, so nothing is lost, but the function never works). Fix:
  // check `Object.isExtensible` / configurability in `before` and throw a typed configuration
  // error BEFORE acquiring the key (or fall back to hooks-only decisions), and document it.
  // Partly fixed (lambda2): `before` now refuses such a request with InvalidInputError before
  // acquiring the key (see the held test below, and the README); it still does not work as
  // with Middy alone (no hooks-only fallback), so this stays open.
  // lambda21: left open: on a sealed request Middy itself cannot write request.earlyResponse
  // (a replay could not end the chain), and without the watch a later `after`'s throw looks
  // like the handler's (a release would run it twice).
  // wt/lambda: re-examined, still open. A hooks-only fallback would pass this test (the first
  // run records 'v') but break two guarantees: a replay of `undefined` (the usual SQS / SNS
  // handler) cannot end the chain, so it would either run the handler again or fail at every
  // retry; and `onError` could not tell the handler's throw from a later `after`'s, so it must
  // leave a marker on every throw (errors never retried, against successes-only). The typed
  // refusal before the key is acquired (the held test below) is the safe answer.
  // lamfix: re-examined, still open. Knowing the writer's call site does not help: Middy 6 ends
  // a chain early only through an own `request.earlyResponse` (`Object.hasOwn`), which a sealed
  // request cannot get (Middy's own `request.earlyResponse = res` throws a TypeError), so a
  // replay cannot skip the handler; ending `before` with a throw instead runs every later
  // `onError` on a made-up error and cannot answer `undefined` (Middy rethrows when
  // request.response is undefined after the onError chain). A function that answers its first
  // call and then fails (or reruns) every retry is worse than the refusal at the first call.
  // Workaround (README "Known gaps"): seal in a middleware used after idempotency().
  it.fails('a sealed request (plugin requestStart): the handler answers as with Middy alone', async () => {
    // (Middy's types give requestStart no argument; it is called with the request)
    const plugin = {
      requestStart: ((request: object) => Object.seal(request)) as unknown as () => void,
    };
    const plain = middy(async () => 'v', plugin);
    expect(await plain({ id: 's' }, fakeContext(10_000))).toBe('v');
    const handler = middy(async () => 'v', plugin).use(
      idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }),
    );
    expect(await handler({ id: 'sealed' }, fakeContext(10_000))).toBe('v');
  });

  it('held: a sealed request fails without holding the key (the retry without the seal runs)', async () => {
    let runs = 0;
    const base = async () => {
      runs += 1;
      return 'v';
    };
    const sealed = middy(base, {
      requestStart: ((r: object) => Object.seal(r)) as unknown as () => void,
    }).use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }));
    // (lambda2: a typed refusal before the key is acquired; it was a TypeError after it)
    await expect(sealed({ id: 'sealed-2' }, fakeContext(10_000))).rejects.toThrow(
      InvalidInputError,
    );
    const open = middy(base).use(
      idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }),
    );
    expect(await open({ id: 'sealed-2' }, fakeContext(10_000))).toBe('v');
    expect(runs).toBe(1);
  });

  // FINDING (LOW): a frozen request (a plugin's `requestStart: Object.freeze`): Middy alone
  // fails too (its write of request.response throws), so the caller's error is the same kind,
  // but idempotency()'s `before` has ACQUIRED the key before failing to install its watch, and
  // Middy's catch then throws at its own reset (`request.response = undefined`) with no
  // `onError` run: the key stays held for nothing until its lease ends (retries get
  // InProgressError instead of running once the request is no longer frozen). Fix: check that
  // `response` / `error` are configurable and the request extensible BEFORE `begin()` (throw a
  // typed error then), or release in `before` when installing the watch fails.
  // FIXED (was FINDING LOW): `before` refuses a sealed or frozen request with InvalidInputError
  // before begin(): no key is acquired (the caller gets Middy's TypeError from its own catch,
  // as without idempotency()).
  it('a frozen request: the key is not held after the failure (the next invocation runs)', async () => {
    let runs = 0;
    const base = async () => {
      runs += 1;
      return 'v';
    };
    const frozenPlugin = {
      requestStart: ((r: object) => Object.freeze(r)) as unknown as () => void,
    };
    await expect(middy(base, frozenPlugin)({ id: 'f' }, fakeContext(10_000))).rejects.toThrow(
      TypeError,
    );
    runs = 0; // (lambda2: Middy alone ran the handler before its write failed)
    const frozen = middy(base, frozenPlugin).use(
      idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }),
    );
    await expect(frozen({ id: 'frozen' }, fakeContext(10_000))).rejects.toThrow(TypeError);
    const open = middy(base).use(
      idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }),
    );
    expect(await open({ id: 'frozen' }, fakeContext(10_000))).toBe('v');
    expect(runs).toBe(1);
  });

  // rev12f decision 2: without idem.last a throw then a later onError's early answer is recorded (the documented cost); this test keeps the release, with idem.last
  it('held: a store whose release / complete THROW synchronously: the caller gets the handler error (release) or a store error (record), never a hang', async () => {
    const syncThrow = new Proxy(env.store, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (prop === 'release' || prop === 'complete')
          return () => {
            throw new Error(`sync ${String(prop)}`);
          };
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    let runs = 0;
    const idemL0 = idempotency({
      scope: functionScope,
      store: syncThrow,
      key: (e: Ev) => e.id,
      storeTimeoutMs: 300,
    });
    const handler = middy(async (e: Ev) => {
      runs += 1;
      if (e.id.startsWith('t')) throw new Error('handler error');
      return 'v';
    })
      .use(idemL0)
      .use({
        onError: async (request: Req) => {
          if (request.event.id.endsWith('u')) request.earlyResponse = undefined;
        },
      })
      .use(idemL0.last);
    for (const id of ['t1', 't2u']) {
      await expect(handler({ id }, fakeContext(10_000))).rejects.toThrow('handler error');
    }
    const rec = await settle(handler({ id: 'r1' }, fakeContext(10_000)));
    expect(rec).toHaveProperty('error');
    expect(runs).toBe(3);
  });

  it('held: many reads of request.response (hooks and a requestEnd plugin) with slow writes see values, never promises', async () => {
    const store = faulty(env.store, 80);
    const seen: unknown[] = [];
    const plugin = {
      requestEnd: ((request: Req) => {
        for (let i = 0; i < 5; i++) seen.push(request.response);
      }) as unknown as () => void,
    };
    for (const path of ['before-early', 'after-early', 'plain', 'onError-early']) {
      seen.length = 0;
      const handler = middy(async (e: Ev) => {
        if (e.id.startsWith('onError')) throw new Error('h');
        return { from: 'handler' };
      }, plugin)
        .use(idempotency({ scope: functionScope, store, key: (e: Ev) => e.id }))
        .use({
          before: async (request: Req) => {
            if (request.event.id.startsWith('before')) return { from: 'before' };
          },
          after: async (request: Req) => {
            for (let i = 0; i < 5; i++) seen.push(request.response);
            if (request.event.id.startsWith('after')) return { from: 'after' };
          },
          onError: async () => ({ from: 'onError' }),
        });
      const got = await handler({ id: path }, fakeContext(10_000));
      expect(got).toEqual({
        from: path.split('-')[0] === 'plain' ? 'handler' : path.split('-')[0],
      });
      for (const v of seen)
        expect(v).toEqual(expect.objectContaining({ from: expect.any(String) }));
      expect(seen.some((v) => v instanceof Promise)).toBe(false);
    }
  });
});

describeMiddy('rev12b: the memory store', ({ middy }) => {
  it('held: concurrent invocations of one key on one handler instance: one run, every other gets the replay or InProgressError', async () => {
    const store = createMemoryStore();
    let runs = 0;
    const handler = middy(async () => {
      runs += 1;
      await sleep(30);
      return undefined;
    })
      .use(idempotency({ scope: functionScope, store, key: (e: Ev) => e.id }))
      .use({ after: async () => {} });
    const all = await Promise.all(
      Array.from({ length: 10 }, () => settle(handler({ id: 'same' }, fakeContext(10_000)))),
    );
    expect(runs).toBe(1);
    expect(all.filter((r) => 'value' in r).length).toBeGreaterThanOrEqual(1);
    expect(await handler({ id: 'same' }, fakeContext(10_000))).toBeUndefined();
    expect(runs).toBe(1);
  });

  // FIXED (was FINDING LOW): marks go to the invocations whose handler is running when the answer is made, not to the process.
  // Was: FINDING (LOW): the primitive mark of idempotentTimeoutResponse() is process-wide state: a
  // timeout answer of ANOTHER Middy handler in the same process (here one without
  // idempotency(), or an invocation whose race was already won) is taken by the next
  // invocation whose handler returns the equal primitive in the same tick: its real return is
  // taken as a timeout, the key released, the retry runs the handler a second time. Fix: scope
  // the mark to the request (e.g. the wrapper marks, Middy writes it to THAT request: compare
  // the abort of Middy's `signal` handed to the handler, or keep the mark per plugin instance).
  it("a primitive timeout mark made elsewhere is not taken by another invocation's return", async () => {
    const store = createMemoryStore();
    const timeoutAnswer = idempotentTimeoutResponse(() => 'accepted');
    let runs = 0;
    const handler = middy(async () => {
      runs += 1;
      return 'accepted';
    }).use(idempotency({ scope: functionScope, store, key: (e: Ev) => e.id }));
    // Changed by rev12f decision 1: a primitive answer is refused up front.
    expect(() => timeoutAnswer()).toThrow(InvalidInputError); // another handler's timeout
    expect(await handler({ id: 'mark' }, fakeContext(10_000))).toBe('accepted');
    expect(await handler({ id: 'mark' }, fakeContext(10_000))).toBe('accepted');
    expect(runs).toBe(1);
  });
});
