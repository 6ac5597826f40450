import { InProgressError, OutcomeNotRecordedError } from '@idem/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { functionScope, idempotency } from '../src/index.js';
import { type Env, fakeContext, openEnv, throwsOnce, withoutCallSites } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// lambda2: the ambiguous write pair (`response = undefined; error = ...` in one run, before the
// handler is known to have returned) is settled by idempotency()'s own hooks or Middy's read,
// never released at the write. These tests pin each way it is settled, and its costs.

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const settle = (p: Promise<unknown>) =>
  p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

describeMiddy('lambda2: the ambiguous catch-like pair (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  it('handler returns undefined, the first `after` notes request.error, a later `after` throws: a marker, no second run', async () => {
    let runs = 0;
    const handler = middy(async () => {
      runs += 1;
      return undefined;
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        after: async () => {
          throw new Error('invalid response');
        },
      })
      .use({
        after: async (request: Req) => {
          request.error = new Error('soft'); // runs first, in Middy's run of the handler's write
        },
      });
    await expect(handler({ id: 'amb-throw' }, fakeContext(10_000))).rejects.toThrow(
      'invalid response',
    );
    const retry = await settle(handler({ id: 'amb-throw' }, fakeContext(10_000)));
    expect((retry as { error: unknown }).error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
  });

  it('handler returns undefined, the first `after` notes request.error, a later `after` sets earlyResponse = undefined: recorded', async () => {
    let runs = 0;
    const handler = middy(async () => {
      runs += 1;
      return undefined;
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        after: async (request: Req) => {
          request.earlyResponse = undefined;
        },
      })
      .use({
        after: async (request: Req) => {
          request.error = new Error('soft');
        },
      });
    expect(await settle(handler({ id: 'amb-undef' }, fakeContext(10_000)))).toEqual({
      value: undefined,
    });
    expect(await settle(handler({ id: 'amb-undef' }, fakeContext(10_000)))).toEqual({
      value: undefined,
    });
    expect(runs).toBe(1);
  });

  // rev12f decision 3: without idem.last, Middy's originalError write while the pair is ambiguous decides nothing (the lease lapses at the deadline); this test keeps the release, with idem.last
  it("the handler throws, a later `onError` rethrows (no idem.last, no freeze): released at Middy's rethrow, the retry runs", async () => {
    let runs = 0;
    const idemL0 = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(idemL0)
      .use({
        onError: async (request: Req) => {
          throw request.error;
        },
      })
      .use(idemL0.last);
    await expect(handler({ id: 'amb-rethrow' }, fakeContext(10_000))).rejects.toThrow('transient');
    await sleep(100); // (the release is in flight when the error goes out: see idem.last)
    expect(await handler({ id: 'amb-rethrow' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  // rev12f decision 3: without idem.last, Middy's originalError write while the pair is ambiguous decides nothing (the lease lapses at the deadline); this test keeps the release, with idem.last
  it('with idem.last: the handler throws, a later `onError` wraps the error and throws: released, the retry runs', async () => {
    let runs = 0;
    const idemL0 = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(idemL0)
      .use({
        onError: async (request: Req) => {
          throw new Error('wrapped', { cause: request.error });
        },
      })
      .use(idemL0.last);
    await expect(handler({ id: 'amb-wrap' }, fakeContext(10_000))).rejects.toThrow('wrapped');
    await sleep(100);
    expect(await handler({ id: 'amb-wrap' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  // rev12f decision 2: without idem.last a throw then a later onError's early answer is recorded (the documented cost); this test keeps the release, with idem.last
  it('with idem.last: the handler throws, an `onError` answers early: released, the retry runs', async () => {
    let runs = 0;
    const idemL0 = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(idemL0)
      .use({ onError: async () => ({ statusCode: 500 }) })
      .use(idemL0.last);
    expect(await handler({ id: 'amb-500' }, fakeContext(10_000))).toEqual({ statusCode: 500 });
    expect(await handler({ id: 'amb-500' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  // The two costs the README states for the middleware without idem.last (rev12f decisions 2
  // and 3), pinned: never a second run, at worst an error's answer kept or a key held to the
  // invocation's deadline.
  // lamfix: since idempotency() tells Middy's own write of request.error by its call site, both
  // are gone where V8's call sites are available (`sites`: released at Middy's catch, the
  // retry runs at once); they remain the fallback without them (pinned as they were).
  it('without idem.last: the handler throws, a later `onError` wraps the error and throws: released at once; without call sites the key is held until the deadline, then the retry runs once', async () => {
    for (const sites of [true, false]) {
      const run = async () => {
        const { handler, runs: ran } = throwsOnce(middy, env.store, async (request: Req) => {
          throw new Error('wrapped', { cause: request.error });
        });
        const id = `amb-wrap-alone-${sites}`;
        const started = performance.now();
        await expect(handler({ id }, fakeContext(600))).rejects.toThrow('wrapped');
        // (with call sites the release is in flight when the error goes out: see idem.last)
        if (sites) await sleep(100);
        // Without call sites, undecided: the key stays held (no release was seen), so a retry
        // now is refused (its InProgressError goes through the same onError, which wraps it).
        // With them, released: the retry runs now, well before the lease (600 ms) ends.
        const heldBack = (answer: { value?: unknown; error?: unknown }) =>
          (answer.error as { cause?: unknown } | undefined)?.cause instanceof InProgressError;
        let answer = await settle(handler({ id }, fakeContext(10_000)));
        expect(heldBack(answer)).toBe(!sites);
        expect(ran()).toBe(sites ? 2 : 1);
        while (heldBack(answer) && performance.now() - started < 5_000) {
          await sleep(150);
          answer = await settle(handler({ id }, fakeContext(10_000)));
        }
        expect(answer).toEqual({ value: 'ok' });
        expect(ran()).toBe(2);
      };
      await (sites ? run() : withoutCallSites(run));
    }
  });

  it('without idem.last: the handler throws, a later `onError` answers early: the caller gets it, released; without call sites that answer is recorded and replayed, the handler never runs again', async () => {
    for (const sites of [true, false]) {
      const run = async () => {
        const { handler, runs } = throwsOnce(middy, env.store, async () => ({ statusCode: 500 }));
        const id = `amb-500-alone-${sites}`;
        expect(await handler({ id }, fakeContext(10_000))).toEqual({ statusCode: 500 });
        const retry = sites ? 'ok' : { statusCode: 500 };
        expect(await handler({ id }, fakeContext(10_000))).toEqual(retry);
        expect(await handler({ id }, fakeContext(10_000))).toEqual(retry);
        expect(runs()).toBe(sites ? 2 : 1);
      };
      await (sites ? run() : withoutCallSites(run));
    }
  });

  it('with idem.last: the handler throws, the first `onError` writes response = undefined and a new error: released', async () => {
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(idem)
      .use({
        onError: async (request: Req) => {
          request.response = undefined;
          request.error = new Error('normalized');
        },
      })
      .use(idem.last);
    await expect(handler({ id: 'amb-norm-last' }, fakeContext(10_000))).rejects.toThrow(
      'normalized',
    );
    expect(await handler({ id: 'amb-norm-last' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  // FIXED (was FINDING LOW): the cost of never releasing on an ambiguous pair. Without
  // idem.last, the handler throws, and the first `onError` Middy calls writes
  // `request.response = undefined` and then a new `request.error` in its synchronous start: a
  // second catch-like pair. It was taken for Middy's catch of a later `after` (the handler
  // returned `undefined`, the first `after` wrote the error): a not-recorded marker, the retry
  // got OutcomeNotRecordedError instead of running. But Middy's catch always follows an
  // `await`, never in the run of the first pair: a second pair in that run is a hook's own, so
  // the first stays ambiguous and idempotency()'s `onError` releases (a first `after`'s two
  // pairs are recorded by its `after`: see the held test below).
  it('without idem.last: the handler throws, the first `onError` writes response = undefined and a new error: released', async () => {
    let runs = 0;
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        onError: async (request: Req) => {
          request.response = undefined;
          request.error = new Error('normalized');
        },
      });
    await expect(handler({ id: 'amb-norm' }, fakeContext(10_000))).rejects.toThrow('normalized');
    expect(await handler({ id: 'amb-norm' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  // The other side of the test above: the same two pairs in one run written by the first
  // `after` hook, after the handler returned `undefined`: they stay ambiguous, and what comes
  // next settles them on the side of the return (never a release: no second run).
  it('held: handler returns undefined, the first `after` writes two catch-like pairs in one run: recorded (or a marker after a later throw), no second run', async () => {
    for (const next of ['none', 'throw', 'early'] as const) {
      let runs = 0;
      const handler = middy(async () => {
        runs += 1;
        return undefined;
      })
        .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
        .use({
          after: async () => {
            if (next === 'throw') throw new Error('invalid response');
            if (next === 'early') return { early: true };
          },
        })
        .use({
          after: async (request: Req) => {
            request.error = new Error('soft');
            request.response = undefined;
            request.error = new Error('softer');
          },
        });
      const id = `amb-two-pairs-${next}`;
      const first = await settle(handler({ id }, fakeContext(10_000)));
      const retry = await settle(handler({ id }, fakeContext(10_000)));
      if (next === 'none') {
        expect(first).toEqual({ value: undefined });
        expect(retry).toEqual({ value: undefined });
      } else if (next === 'early') {
        expect(first).toEqual({ value: { early: true } });
        expect(retry).toEqual({ value: { early: true } });
      } else {
        expect((first as { error: Error }).error.message).toBe('invalid response');
        expect((retry as { error: unknown }).error).toBeInstanceOf(OutcomeNotRecordedError);
      }
      expect(runs).toBe(1);
    }
  });

  // FIXED (lamfix; was FINDING LOW): the other cost. Without idem.last, the handler throws and a
  // later `onError` throws a value Middy cannot tag (a string: Middy's own
  // `e.originalError = ...` throws a TypeError): no hook of idempotency() runs and Middy writes
  // nothing after, so the ambiguous pair was never settled and the key was held until its lease
  // ended. Left open before (lambda21, wt/lambda) because by the writes alone nothing after the
  // pair tells a catch. Now idempotency() tells Middy's own write of request.error (its catch,
  // in `runRequest`) from a hook's by the writer's call site (V8 call sites; see README "Whose
  // write"): the pair is Middy's catch at its write, the release starts there, before any
  // `onError` runs. (Without call sites the cost stays: the held test below.)
  it('without idem.last: the handler throws, a later `onError` throws a string: the key is free for the retry', async () => {
    let runs = 0;
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return 'ok';
    })
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({
        onError: async () => {
          throw 'failed';
        },
      });
    await settle(handler({ id: 'amb-string' }, fakeContext(10_000)));
    await sleep(100);
    expect(await handler({ id: 'amb-string' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  it('held (the cost without call sites, bounded): the same key is free once its lease ends', async () => {
    await withoutCallSites(async () => {
      let runs = 0;
      const handler = middy(async () => {
        runs += 1;
        if (runs === 1) throw new Error('transient');
        return 'ok';
      })
        .use(
          idempotency({
            scope: functionScope,
            store: env.store,
            key: (e: Ev) => e.id,
            leaseMs: 500,
          }),
        )
        .use({
          onError: async (request: Req) => {
            if (request.error instanceof InProgressError) return; // (lets the duplicate's error out)
            throw 'failed';
          },
        });
      // (Heartbeats renew the lease until the invocation's deadline: in Lambda the freeze stops
      // them at the answer; here the deadline, 800 ms, bounds them.)
      await settle(handler({ id: 'amb-string-lease' }, fakeContext(800)));
      const early = await settle(handler({ id: 'amb-string-lease' }, fakeContext(10_000)));
      expect((early as { error: unknown }).error).toBeInstanceOf(InProgressError);
      await sleep(1_000);
      expect(await handler({ id: 'amb-string-lease' }, fakeContext(10_000))).toBe('ok');
      expect(runs).toBe(2);
    });
  });

  it('with idem.last: the handler throws, a later `onError` throws a string: the key is free for the retry', async () => {
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
          throw 'failed';
        },
      })
      .use(idem.last);
    await settle(handler({ id: 'amb-string-last' }, fakeContext(10_000)));
    expect(await handler({ id: 'amb-string-last' }, fakeContext(10_000))).toBe('ok');
    expect(runs).toBe(2);
  });

  it('with idem.last: a later `before` initialising request.response, the handler throws: released, the retry runs', async () => {
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      if (runs === 1) throw new Error('transient');
      return { statusCode: 200 };
    })
      .use(idem)
      .use({
        before: async (request: Req) => {
          request.response = { headers: {} }; // default response, replaced by the handler's
        },
      })
      .use(idem.last);
    await expect(handler({ id: 'init-last' }, fakeContext(10_000))).rejects.toThrow('transient');
    expect(await handler({ id: 'init-last' }, fakeContext(10_000))).toEqual({ statusCode: 200 });
    expect(await handler({ id: 'init-last' }, fakeContext(10_000))).toEqual({ statusCode: 200 });
    expect(runs).toBe(2);
  });

  it('with idem.last: a later `before` initialising request.response, the handler returns undefined, an `after` throws: a marker', async () => {
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(async () => {
      runs += 1;
      return undefined;
    })
      .use(idem)
      .use({
        before: async (request: Req) => {
          request.response = { headers: {} };
        },
        after: async () => {
          throw new Error('invalid response');
        },
      })
      .use(idem.last);
    await expect(handler({ id: 'init-last-after' }, fakeContext(10_000))).rejects.toThrow(
      'invalid response',
    );
    const retry = await settle(handler({ id: 'init-last-after' }, fakeContext(10_000)));
    expect((retry as { error: unknown }).error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(runs).toBe(1);
  });
});
