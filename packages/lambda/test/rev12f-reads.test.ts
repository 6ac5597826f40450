import { OutcomeNotRecordedError } from '@idem/core';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { functionScope, idempotency } from '../src/index.js';
import { type Env, fakeContext, openEnv, throwsOnce, withoutCallSites } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// rev12f: the read-counting rule (two reads of an early answer in one synchronous run = Middy's
// onError chain = release / rethrow; one = returned = record) against other readers of
// request.response: background logging, JSON.stringify(request), input-output-logger
// patterns, a plugin's requestEnd.

type Ev = { id: string };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const settle = (p: Promise<unknown>) =>
  p.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );

/**
 * An `after` hook that starts a fire-and-forget log of the request (an async logger that awaits
 * `hops` settled promises, e.g. formatters, then serializes the request). It reads
 * request.response `hops` microtasks later: for some `hops` in the same synchronous run as
 * Middy's `return request.response`.
 */
function backgroundLogger(hops: number, noteError: boolean) {
  return {
    after: async (request: Req) => {
      if (noteError) request.error = new Error('soft'); // a soft error noted for the logger
      void (async () => {
        for (let i = 0; i < hops; i++) await null;
        JSON.stringify({ event: request.event, response: request.response });
      })();
    },
  };
}

const HOPS = [0, 1, 2, 3, 4, 5, 6, 7, 8];

describeMiddy('rev12f: other readers of an early answer (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  // FIXED (was FINDING HIGH): no read counting; the ambiguous pair ended early is taken as returned.
  // Was: the handler returns undefined (SQS), the first `after` notes request.error
  // (the ambiguous pair) and starts a background log that reads request.response; a later
  // `after` answers early with a value. When the log's read lands in the synchronous run of
  // Middy's `return request.response` (4 settled awaits here, Node 20/22), the watch counts two
  // reads, takes it for Middy's onError chain and RELEASES the key: the caller got a success
  // (Middy alone: the same success), the retry runs the handler a SECOND time. Fix: do not infer
  // the chain from the number of reads (any code can read); decide the ambiguous pair as
  // "returned" unless an onError hook of idempotency()/idem.last or Middy's originalError write
  // proves the catch, or require idem.last whenever other middlewares are used and decide there.
  it("ambiguous pair + a background read at Middy's read: the handler never runs twice", async () => {
    const failures: string[] = [];
    for (const hops of HOPS) {
      let runs = 0;
      const handler = middy(async () => {
        runs += 1;
        return undefined;
      })
        .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
        .use({ after: async () => ({ statusCode: 200 }) })
        .use(backgroundLogger(hops, true));
      const id = `amb-bg-${hops}`;
      const first = await settle(handler({ id }, fakeContext(10_000)));
      const retry = await settle(handler({ id }, fakeContext(10_000)));
      if (runs !== 1)
        failures.push(`hops=${hops}: ${runs} runs (${JSON.stringify([first, retry])})`);
    }
    expect(failures).toEqual([]);
  });

  // FIXED (was FINDING MEDIUM): no read counting: a rejection only after a known catch.
  // Was: the same background read, with idem.last and no ambiguous pair: a later
  // `after` answers early with `undefined` (sets earlyResponse = undefined). The two reads make
  // the watch take Middy's onError chain: its answer promise REJECTS (with request.error,
  // here `undefined`) where Middy alone answers `undefined` (success), and a not-recorded marker
  // is left: the retry gets OutcomeNotRecordedError instead of the replayed success. Fix: as
  // above; at the least never turn a value Middy would return into a rejection unless
  // request.error is set by a catch this middleware saw.
  it('idem.last, an `after` answers early with undefined, a background read: the caller gets undefined, the retry replays it', async () => {
    const failures: string[] = [];
    for (const hops of HOPS) {
      let runs = 0;
      const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
      const handler = middy(async () => {
        runs += 1;
        return undefined;
      })
        .use(idem)
        .use({
          after: async (request: Req) => {
            request.earlyResponse = undefined;
          },
        })
        .use(backgroundLogger(hops, false))
        .use(idem.last);
      const id = `last-bg-${hops}`;
      const first = await settle(handler({ id }, fakeContext(10_000)));
      const retry = await settle(handler({ id }, fakeContext(10_000)));
      if (!('value' in first) || !('value' in retry) || runs !== 1)
        failures.push(
          `hops=${hops}: ${String((first as { error?: unknown }).error)} / ${(retry as { error?: Error }).error?.name} runs=${runs}`,
        );
    }
    expect(failures).toEqual([]);
  });

  // FIXED (was FINDING MEDIUM): no read counting: the early value is recorded.
  // Was: as above with a value answer (a 200 from a later `after`): the caller gets
  // it, but a not-recorded marker is written instead of the record: the retry gets
  // OutcomeNotRecordedError (a failure) where the README promises a replay of the answer.
  it('an `after` answers early with a value, a background read: the retry replays it', async () => {
    const failures: string[] = [];
    for (const hops of HOPS) {
      let runs = 0;
      const handler = middy(async () => {
        runs += 1;
        return { statusCode: 201 };
      })
        .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
        .use({ after: async () => ({ statusCode: 200 }) })
        .use(backgroundLogger(hops, false));
      const id = `val-bg-${hops}`;
      const first = await settle(handler({ id }, fakeContext(10_000)));
      const retry = await settle(handler({ id }, fakeContext(10_000)));
      const ok =
        JSON.stringify(first) === '{"value":{"statusCode":200}}' &&
        JSON.stringify(retry) === '{"value":{"statusCode":200}}' &&
        runs === 1;
      if (!ok) {
        const err = (retry as { error?: unknown }).error;
        failures.push(
          `hops=${hops}: ${err instanceof OutcomeNotRecordedError ? 'OutcomeNotRecordedError' : JSON.stringify(retry)}`,
        );
      }
    }
    expect(failures).toEqual([]);
  });

  // FIXED (was FINDING MEDIUM): no read counting: never a rejection in the before chain.
  // Was: a `before` (an SQS "skip this message" filter) answers early with
  // `undefined` (earlyResponse = undefined); an earlier `before` started a background log of the
  // request. When the log's read lands in the run of Middy's `return request.response`, the watch
  // takes the two reads for the onError chain and its answer promise REJECTS with
  // request.error (`undefined`): the caller gets a failure where Middy alone answers
  // `undefined` (for SQS: the message is retried instead of deleted). The key is released (as
  // it should be). Fix: as above (do not infer the chain from read counts; in the before chain
  // nothing was caught: never reject there).
  it('a `before` answers early with undefined, a background read: the caller gets undefined', async () => {
    const failures: string[] = [];
    for (const hops of HOPS) {
      let runs = 0;
      const handler = middy(async () => {
        runs += 1;
        return undefined;
      })
        .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
        .use({
          before: async (request: Req) => {
            void (async () => {
              for (let i = 0; i < hops; i++) await null;
              JSON.stringify(request);
            })();
          },
        })
        .use({
          before: async (request: Req) => {
            request.earlyResponse = undefined;
          },
        });
      const first = await settle(handler({ id: `skip-bg-${hops}` }, fakeContext(10_000)));
      if (!('value' in first) || runs !== 0)
        failures.push(`hops=${hops}: ${JSON.stringify(first)} runs=${runs}`);
    }
    expect(failures).toEqual([]);
  });

  it('held: JSON.stringify(request) in every hook, an input-output-logger after/onError, a requestEnd logger; handler returns undefined', async () => {
    const logs: string[] = [];
    let runs = 0;
    const idem = idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id });
    const handler = middy(
      async (e: Ev) => {
        runs += 1;
        if (e.id.startsWith('t') && runs === 1) throw new Error('transient');
        return undefined;
      },
      {
        requestEnd: ((r: Req) => {
          logs.push(`end ${JSON.stringify(r.response)}`);
        }) as unknown as () => void,
      },
    )
      .use(idem)
      .use({
        before: (r: Req) => {
          logs.push(JSON.stringify(r));
        },
        after: (r: Req) => {
          logs.push(JSON.stringify(r));
          logs.push(`io ${JSON.stringify(r.response)}`); // input-output-logger's after
        },
        onError: (r: Req) => {
          logs.push(JSON.stringify(r));
          if (r.response === undefined) return; // input-output-logger's onError
          logs.push(`io ${JSON.stringify(r.response)}`);
        },
      })
      .use(idem.last);
    expect(await settle(handler({ id: 'ok' }, fakeContext(10_000)))).toEqual({ value: undefined });
    expect(await settle(handler({ id: 'ok' }, fakeContext(10_000)))).toEqual({ value: undefined });
    expect(runs).toBe(1);
    runs = 0;
    const t1 = await settle(handler({ id: 'tx' }, fakeContext(10_000)));
    expect((t1 as { error: Error }).error.message).toBe('transient');
    expect(await settle(handler({ id: 'tx' }, fakeContext(10_000)))).toEqual({ value: undefined });
    expect(runs).toBe(2);
    expect(logs.length).toBeGreaterThan(4);
  });

  it('held: a requestEnd that serializes the whole request after an early answer in `after`: recorded, same answer', async () => {
    let runs = 0;
    let ended = '';
    const handler = middy(
      async () => {
        runs += 1;
        return { statusCode: 201 };
      },
      {
        requestEnd: ((r: Req) => {
          ended = JSON.stringify(r);
        }) as unknown as () => void,
      },
    )
      .use(idempotency({ scope: functionScope, store: env.store, key: (e: Ev) => e.id }))
      .use({ after: async () => ({ statusCode: 200 }) });
    expect(await handler({ id: 'end' }, fakeContext(10_000))).toEqual({ statusCode: 200 });
    expect(ended).toContain('"statusCode":200');
    expect(await handler({ id: 'end' }, fakeContext(10_000))).toEqual({ statusCode: 200 });
    expect(runs).toBe(1);
  });

  // Changed by rev12f decision 2 (no read counting): without idem.last, a handler that throws
  // and a later `onError` that answers early is taken as returned: the 500 is recorded (the
  // documented cost; idem.last releases it: see rev12b-last).
  // lamfix: that cost stays only without V8 call sites; with them (`sites`) Middy's catch is
  // known at its write and released.
  it('an onError that reads request.response twice (typeof, value) then answers early with a 500 (no idem.last): released; without call sites recorded (decision 2)', async () => {
    for (const sites of [true, false]) {
      const run = async () => {
        const { handler, runs } = throwsOnce(middy, env.store, async (r: Req) => {
          if (typeof r.response === 'undefined' && r.response === undefined)
            return { statusCode: 500 };
        });
        const id = `oe-${sites}`;
        expect(await handler({ id }, fakeContext(10_000))).toEqual({ statusCode: 500 });
        await sleep(20);
        const retry = sites ? 'ok' : { statusCode: 500 };
        expect(await handler({ id }, fakeContext(10_000))).toEqual(retry);
        expect(await handler({ id }, fakeContext(10_000))).toEqual(retry);
        expect(runs()).toBe(sites ? 2 : 1);
      };
      await (sites ? run() : withoutCallSites(run));
    }
  });
});
