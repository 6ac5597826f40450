import { InvalidInputError } from '@idem/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { functionScope, idempotency } from '../src/index.js';
import { type Env, fakeContext, openEnv, withoutCallSites } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// rev12f: non-extensible requests, background readers in the onError chain, undefined in
// every chain.

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const settle = (p: Promise<unknown>) =>
  p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

describeMiddy('rev12f: misc (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  // FIXED (was FINDING LOW): a non-extensible request is refused with InvalidInputError before begin().
  // Was: a plugin's requestStart that makes the request non-extensible
  // (Object.preventExtensions, no seal: response and error stay configurable) passes the
  // sealed/frozen check (which looks at response and error only). The first invocation runs and
  // is recorded; every retry then fails in `before` with a TypeError ("Cannot add property
  // earlyResponse, object is not extensible") from the replay's `request.earlyResponse = value`:
  // the recorded answer is never replayed, the caller gets an untyped TypeError where Middy
  // alone answers. Fix: refuse a non-extensible request in checkWatchable
  // (`!Object.isExtensible(request)` => InvalidInputError before begin()), since a replay must
  // add `earlyResponse`.
  it('a non-extensible request: a typed refusal up front, or the retry replays', async () => {
    let runs = 0;
    const handler = middy(
      async () => {
        runs += 1;
        return 'ok';
      },
      {
        requestStart: ((r: object) => Object.preventExtensions(r)) as unknown as () => void,
      },
    ).use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }));
    const first = await settle(handler({ id: 'nx' }, fakeContext(10_000)));
    if ('error' in first) {
      expect(first.error).toBeInstanceOf(InvalidInputError);
      return;
    }
    expect(first.value).toBe('ok');
    expect(await settle(handler({ id: 'nx' }, fakeContext(10_000)))).toEqual({ value: 'ok' });
    expect(runs).toBe(1);
  });

  // Changed by rev12f decision 2: without idem.last the 500 of a later `onError` after a throw
  // is recorded (the documented cost: the retry replays it, one run); with idem.last, released.
  // lamfix: where V8's call sites tell Middy's catch at its write (the default), released
  // without idem.last too; the cost stays the fallback without call sites.
  it('held: the handler throws, a background log reads the request in the onError chain (any timing), an onError answers 500: released (recorded without idem.last and without call sites)', async () => {
    const failures: string[] = [];
    for (const [withLast, sites] of [
      [false, true],
      [true, true],
      [false, false],
      [true, false],
    ] as const) {
      const released = withLast || sites;
      for (let hops = 0; hops < 10; hops++) {
        let runs = 0;
        const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
        let h = middy(async () => {
          runs += 1;
          if (runs === 1) throw new Error('transient');
          return 'ok';
        })
          .use(idem)
          .use({ onError: async () => ({ statusCode: 500 }) })
          .use({
            onError: async (request: Req) => {
              void (async () => {
                for (let i = 0; i < hops; i++) await null;
                JSON.stringify(request);
              })();
            },
          });
        if (withLast) h = h.use(idem.last);
        const id = `oe-bg-${withLast}-${sites}-${hops}`;
        const both = async () => {
          const first = await settle(h({ id }, fakeContext(10_000)));
          await sleep(5);
          return [first, await settle(h({ id }, fakeContext(10_000)))];
        };
        const [first, retry] = sites ? await both() : await withoutCallSites(both);
        if (
          JSON.stringify(first) !== '{"value":{"statusCode":500}}' ||
          JSON.stringify(retry) !==
            (released ? '{"value":"ok"}' : '{"value":{"statusCode":500}}') ||
          runs !== (released ? 2 : 1)
        )
          failures.push(
            `last=${withLast} sites=${sites} hops=${hops}: ${JSON.stringify([first, retry])} runs=${runs}`,
          );
      }
    }
    expect(failures).toEqual([]);
  });

  // FIXED (was FINDING MEDIUM): the originalError-shaped write while the pair is ambiguous decides nothing.
  // Was: without idem.last, the handler returns undefined, the first `after` notes
  // request.error (the ambiguous pair), and a later `after` (an error normalizer, as many
  // loggers do) wraps it: `e.originalError = request.error; request.error = e`. The watch takes
  // that write for Middy's own catch of a throwing onError (same shape) and RELEASES the key in
  // the `after` chain: the caller got Middy's success, the retry runs the handler a SECOND time.
  // With idem.last (its `after` runs first) it holds (next test). Fix: only honour the
  // originalError shape while an onError chain can be running (not between idempotency()'s
  // knowledge of a return and its own `after`), e.g. require a later read/hook of the onError
  // chain, or settle the pair as returned when the next write comes from an `after` hook.
  it('no idem.last: ambiguous pair then an `after` error normalizer with originalError: no second run', async () => {
    let runs = 0;
    const handler = middy(async () => {
      runs += 1;
      return undefined;
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        after: async (request: Req) => {
          if (request.error) {
            const e = new Error('normalized') as Error & { originalError?: unknown };
            e.originalError = request.error;
            request.error = e;
          }
        },
      })
      .use({
        after: (request: Req) => {
          request.error = new Error('soft'); // noted for the logger, no throw
        },
      });
    expect(await settle(handler({ id: 'norm' }, fakeContext(10_000)))).toEqual({
      value: undefined,
    });
    await sleep(20);
    expect(await settle(handler({ id: 'norm' }, fakeContext(10_000)))).toEqual({
      value: undefined,
    });
    expect(runs).toBe(1);
  });

  it('held: the same with idem.last: recorded, one run', async () => {
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      return undefined;
    })
      .use(idem)
      .use({
        after: async (request: Req) => {
          if (request.error) {
            const e = new Error('normalized') as Error & { originalError?: unknown };
            e.originalError = request.error;
            request.error = e;
          }
        },
      })
      .use({
        after: (request: Req) => {
          request.error = new Error('soft');
        },
      })
      .use(idem.last);
    expect(await settle(handler({ id: 'norm-l' }, fakeContext(10_000)))).toEqual({
      value: undefined,
    });
    expect(await settle(handler({ id: 'norm-l' }, fakeContext(10_000)))).toEqual({
      value: undefined,
    });
    expect(runs).toBe(1);
  });

  it('held: undefined everywhere: the handler returns undefined, an `after` sets earlyResponse = undefined, a requestEnd reads: recorded undefined, one run', async () => {
    let runs = 0;
    let seen: unknown = 'unset';
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(
      async () => {
        runs += 1;
        return undefined;
      },
      {
        requestEnd: ((r: Req) => {
          seen = r.response;
        }) as unknown as () => void,
      },
    )
      .use(idem)
      .use({
        before: (r: Req) => {
          r.response = undefined; // a default, replaced by the handler's
        },
        after: (r: Req) => {
          r.earlyResponse = undefined;
        },
        onError: (r: Req) => {
          r.earlyResponse = undefined;
        },
      })
      .use(idem.last);
    expect(await settle(handler({ id: 'u' }, fakeContext(10_000)))).toEqual({ value: undefined });
    expect(seen).toBeUndefined();
    expect(await settle(handler({ id: 'u' }, fakeContext(10_000)))).toEqual({ value: undefined });
    expect(runs).toBe(1);
  });

  it('held: the handler throws undefined, every onError leaves undefined: the caller gets the rejection, released, the retry runs', async () => {
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw undefined;
      return undefined;
    })
      .use(idem)
      .use({
        onError: (r: Req) => {
          r.response = undefined;
        },
      })
      .use(idem.last);
    const first = await settle(handler({ id: 'tu' }, fakeContext(10_000)));
    expect(first).toEqual({ error: undefined });
    expect(await settle(handler({ id: 'tu' }, fakeContext(10_000)))).toEqual({ value: undefined });
    expect(runs).toBe(2);
  });
});
