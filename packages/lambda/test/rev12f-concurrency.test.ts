import type { IdempotencyStore } from '@idem/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { functionScope, idempotency } from '../src/index.js';
import { type Env, fakeContext, openEnv } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// rev12f: concurrent invocations on one handler instance, store failures at early answers
// (unhandled rejections), the key's liveness.

type Ev = { id: string; mode: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const settle = (p: Promise<unknown>) =>
  p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

/** A store whose `complete` fails while `failing` is set. */
function failingComplete(store: IdempotencyStore) {
  const state = { failing: true };
  const wrapped = new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop === 'complete' && typeof v === 'function') {
        return async (...args: unknown[]) => {
          if (state.failing) throw new Error('store down');
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { store: wrapped, state };
}

describeMiddy('rev12f: concurrency and failures (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  it('held: 12 interleaved invocations (return / throw / early answers / ambiguous pairs) on one instance: each decided on its own', async () => {
    const runs: Record<string, number> = {};
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async (e: Ev) => {
      runs[e.id] = (runs[e.id] ?? 0) + 1;
      await sleep(5 + ((e.id.length * 7) % 13));
      if (e.mode === 'throw' && runs[e.id] === 1) throw new Error('transient');
      return e.mode === 'undef' ? undefined : { id: e.id };
    })
      .use(idem)
      .use({
        after: async (r: Req) => {
          if (r.event.mode === 'early') return { early: r.event.id };
        },
        onError: async (r: Req) => {
          if (r.event.mode === 'throw') return { statusCode: 500 };
        },
      })
      .use({
        after: (r: Req) => {
          if (r.event.mode === 'undef') r.error = new Error('soft');
        },
      })
      .use(idem.last);
    const modes = ['ok', 'undef', 'throw', 'early'];
    const events = Array.from({ length: 12 }, (_, i) => ({
      id: `c${i}-${modes[i % 4]}`,
      mode: modes[i % 4] as string,
    }));
    const first = await Promise.all(events.map((e) => settle(handler(e, fakeContext(10_000)))));
    await sleep(20);
    const second = await Promise.all(events.map((e) => settle(handler(e, fakeContext(10_000)))));
    events.forEach((e, i) => {
      if (e.mode === 'throw') {
        expect(first[i]).toEqual({ value: { statusCode: 500 } });
        expect(second[i]).toEqual({ value: { id: e.id } });
        expect(runs[e.id]).toBe(2);
      } else {
        const want =
          e.mode === 'undef' ? undefined : e.mode === 'early' ? { early: e.id } : { id: e.id };
        expect(first[i]).toEqual({ value: want });
        expect(second[i]).toEqual({ value: want });
        expect(runs[e.id]).toBe(1);
      }
    });
  });

  it('held: the store fails to record an early answer of `after`: the caller gets an error (from the store), no unhandled rejection; once the store is back the answer is recorded', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const f = failingComplete(env.store);
      let runs = 0;
      const handler = middy(async () => {
        runs += 1;
        return 'done';
      })
        .use(
          idempotency({
            scope: functionScope,
            store: f.store,
            key: (e: Ev) => e.id,
            completionWaitMs: 300,
          }),
        )
        .use({ after: async () => ({ statusCode: 200 }) });
      const first = await settle(handler({ id: 'sf', mode: '' }, fakeContext(10_000)));
      expect((first as { error: Error }).error).toBeInstanceOf(Error);
      f.state.failing = false; // the executor's background retries land now
      await sleep(600);
      expect(unhandled).toEqual([]);
      expect(await handler({ id: 'sf', mode: '' }, fakeContext(10_000))).toEqual({
        statusCode: 200,
      });
      expect(runs).toBe(1);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('held: idem.last; the handler throws, a later onError throws a string (Middy cannot tag it): released at once, the retry runs', async () => {
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(idem)
      .use({
        onError: async () => {
          throw 'string failure';
        },
      })
      .use(idem.last);
    const first = await settle(handler({ id: 'str', mode: '' }, fakeContext(10_000)));
    expect('error' in first).toBe(true);
    expect(await handler({ id: 'str', mode: '' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });
});
