import { setTimeout as sleep } from 'node:timers/promises';
import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type ContextWithIdempotency,
  functionScope,
  InProgressError,
  idempotency,
  isIdemError,
  makeIdempotent,
  makeKinesisBatchHandler,
  makeSqsBatchHandler,
  type RecordReport,
  type RecordStatus,
} from '../src/index.js';
import {
  type Env,
  fakeContext,
  kinesisRecord,
  openEnv,
  redeliver,
  sqsRecord,
  storeKinds,
} from './lambda-env.js';
import { describeMiddy, describeMiddyEach } from './middy-versions.js';

// Adversarial review (lamrev): Middy replays, contexts without a clock, creation-time checks,
// partial batch failures and redeliveries, on real Redis and DynamoDB Local.

interface Job {
  id: string;
  fail?: boolean;
}
const jobOf = (body: string | undefined): Job => JSON.parse(body ?? '{}');

describeMiddyEach(storeKinds, 'lamrev: Middy on %s', (kind, { middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv(kind);
  });
  afterEach(async () => {
    await env.close();
  });

  // FINDING (HIGH; fixed: `before` sets `request.earlyResponse` on a replay, which Middy 6
  // honours whatever the value): a Middy handler that returns nothing (the usual shape of an SQS, SNS or
  // EventBridge handler, and of any async invocation) runs again at EVERY retry. The first
  // run records `undefined` (jsonSerializer keeps it as `meta.undefined`); on the retry the
  // middleware's `before` replays it and returns `undefined`, which Middy 6 does not take
  // for an early response (`runMiddlewares` short-circuits only on `res !== undefined` or
  // an own `request.earlyResponse`), so the handler runs a second time (and `after` finds no
  // execution and records nothing). Reproduce: middy(async () => { sideEffect(); })
  // .use(idempotency({ store, key })), invoke twice with the same key: two side effects.
  // Fix: in `before`, on a replay set `request.earlyResponse = value` (Middy >= 6), and for
  // older Middy return a sentinel-free path, e.g. refuse/document, or record `null`.
  it('a handler that returns undefined is not run again on a retry (replayed)', async () => {
    let runs = 0;
    const handler = middy(async (event: { id: string }, context: Context) => {
      runs += 1;
      const { fence } = (context as ContextWithIdempotency<Context>).idempotency ?? { fence: 0 };
      await env.ledger.write(event.id, fence, `run ${runs}`);
      // returns nothing, like most event-driven handlers
    }).use(
      idempotency({
        scope: functionScope,
        store: env.store,
        key: (event: { id: string }) => event.id,
      }),
    );
    await handler({ id: 'void-1' }, fakeContext(10_000));
    await handler({ id: 'void-1' }, fakeContext(10_000));
    await handler({ id: 'void-1' }, fakeContext(10_000));
    expect(runs).toBe(1);
  });

  // Control for the above: the same middleware with a defined return value replays (held).
  it('a handler that returns a value runs once across three invocations', async () => {
    let runs = 0;
    const handler = middy(async (_event: { id: string }) => {
      runs += 1;
      return { ok: runs };
    }).use(
      idempotency({
        scope: functionScope,
        store: env.store,
        key: (event: { id: string }) => event.id,
      }),
    );
    const a = await handler({ id: 'val-1' }, fakeContext(10_000));
    const b = await handler({ id: 'val-1' }, fakeContext(10_000));
    const c = await handler({ id: 'val-1' }, fakeContext(10_000));
    expect([a, b, c]).toEqual([{ ok: 1 }, { ok: 1 }, { ok: 1 }]);
    expect(runs).toBe(1);
  });
});

describeMiddy('lamrev: Middy early responses (redis)', ({ middy }) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  // FINDING (MEDIUM; fixed: an inherited `earlyResponse` setter on the request releases the key
  // and holds the early answer until the release lands): a later middleware whose `before` answers early (a validator that
  // returns a 400, a warmup/keep-alive short-circuit, a cache) makes Middy skip the handler
  // AND every `after`: the key the idempotency middleware acquired in its `before` is
  // neither completed nor released, and its heartbeats keep it in progress until the
  // invocation's deadline. Every retry of that key meanwhile fails with InProgressError
  // (a 15-minute function: 15 minutes), though nothing runs. Reproduce: .use(idempotency())
  // .use({ before: async () => ({ statusCode: 400 }) }), invoke, invoke again with the same
  // key: InProgressError. Fix: detect the early response (Middy 6 sets
  // `request.earlyResponse`; or wrap the handler, or use a `plugin.beforeHandler`/final hook)
  // and release the execution when the handler never ran; at least stop its heartbeat.
  it('a later middleware answering early does not leave the key in progress', async () => {
    let runs = 0;
    const handler = middy(async (_event: { id: string; valid: boolean }) => {
      runs += 1;
      return 'done';
    })
      .use(
        idempotency({
          scope: functionScope,
          store: env.store,
          key: (event: { id: string }) => event.id,
          leaseMs: 3_000,
        }),
      )
      .use({
        before: async (request: { event: { valid: boolean } }) =>
          request.event.valid ? undefined : { statusCode: 400 },
      });
    expect(await handler({ id: 'early-1', valid: false }, fakeContext(10_000))).toEqual({
      statusCode: 400,
    });
    // The retry (the client fixed nothing; or a now-valid event) must not be blocked.
    let blocked: unknown;
    try {
      await handler({ id: 'early-1', valid: true }, fakeContext(10_000));
    } catch (error) {
      blocked = error;
    }
    expect(blocked).toBeUndefined();
    expect(runs).toBe(1);
  });

  // Held, for contrast: when the handler throws, onError releases and the retry runs.
  it('a throwing handler releases the key at once: the retry runs with the next fence', async () => {
    const fences: number[] = [];
    const handler = middy(async (_event: { id: string }, context: Context) => {
      const { fence } = (context as ContextWithIdempotency<Context>).idempotency ?? { fence: 0 };
      fences.push(fence);
      if (fences.length === 1) throw new Error('after side effect');
      return 'ok';
    }).use(
      idempotency({
        scope: functionScope,
        store: env.store,
        key: (event: { id: string }) => event.id,
      }),
    );
    await expect(handler({ id: 'thr-1' }, fakeContext(10_000))).rejects.toThrow(
      'after side effect',
    );
    expect(await handler({ id: 'thr-1' }, fakeContext(10_000))).toBe('ok');
    expect(await handler({ id: 'thr-1' }, fakeContext(10_000))).toBe('ok');
    expect(fences).toEqual([1, 2]);
  });
});

describe('lamrev: contexts and options (redis)', () => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv('redis');
  });
  afterEach(async () => {
    await env.close();
  });

  // FINDING (MEDIUM; fixed: the deadline timer is armed only for a finite deadline, its delay
  // clamped to 2^31-1 ms): a batch handler called with a context that has no clock (no
  // `getRemainingTimeInMillis`, or one answering Infinity/NaN: `remainingMs` documents
  // Infinity as "a local call") computes deadline = Infinity and arms
  // `setTimeout(resolve, Infinity)`, which Node clamps to 1 ms (TimeoutOverflowWarning):
  // every record whose handler takes more than ~1 ms is reported `timed_out`, sent back, and
  // processing of the batch stops, while the handler keeps running in the background.
  // Local runs, containers and tests of a batch handler never get past their first slow
  // record. Reproduce: makeSqsBatchHandler(async () => sleep(20), { store })
  // ({ Records: [r1, r2] }, { functionName: 'f' }). Fix: arm the deadline timer only for a
  // finite deadline, and clamp the delay to 2^31-1 ms.
  it('a context without a clock processes every record (no 1 ms deadline)', async () => {
    const reports: RecordStatus[] = [];
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord) => {
        await sleep(30);
        return jobOf(record.body).id;
      },
      { store: env.store, onRecord: (r) => reports.push(r.status) },
    );
    const event: SQSEvent = {
      Records: [sqsRecord('{"id":"a"}'), sqsRecord('{"id":"b"}'), sqsRecord('{"id":"c"}')],
    };
    const clockless = { functionName: 'local-fn' } as unknown as Context;
    const response = await handler(event, clockless);
    // Let a background run settle before the store is closed.
    await sleep(150);
    expect(reports).toEqual(['processed', 'processed', 'processed']);
    expect(response.batchItemFailures).toEqual([]);
  });

  // Held: makeIdempotent itself copes with the clockless context (the lease is leaseMs).
  it('makeIdempotent with a clockless context runs once and replays', async () => {
    let runs = 0;
    const handler = makeIdempotent(
      async (_event: { id: string }) => {
        runs += 1;
        await sleep(20);
        return { n: runs };
      },
      { scope: functionScope, store: env.store, key: (event) => event.id },
    );
    const clockless = { functionName: 'local-fn' } as unknown as Context;
    expect(await handler({ id: 'cl-1' }, clockless)).toEqual({ n: 1 });
    expect(await handler({ id: 'cl-1' }, clockless)).toEqual({ n: 1 });
    expect(runs).toBe(1);
  });

  // FINDING (LOW; fixed: handler, options, key, payload and onRecord are checked at creation,
  // InvalidInputError): the wrappers check the engine options at creation but not their own: a
  // missing `key` function (a JavaScript caller, or one migrating from Powertools' `config`)
  // or a handler that is not a function is accepted, and fails at every invocation with a
  // plain TypeError ("key is not a function"): in a batch handler, every record of every
  // batch is reported failed and sent back until the redrive policy dead-letters the queue.
  // `@idem/consumers` refuses a non-function handler with InvalidInputError at creation.
  // Fix: check `typeof handler === 'function'`, `typeof key === 'function'` (makeIdempotent,
  // idempotency()), and that `key`/`payload`/`scope`/`onRecord` are functions when given.
  it('missing key or a non-function handler is a typed error at creation', () => {
    const typed = (make: () => unknown) => {
      try {
        make();
      } catch (error) {
        return isIdemError(error) && error.code === 'INVALID_INPUT';
      }
      return false;
    };
    const noKey = { store: env.store } as unknown as Parameters<typeof makeIdempotent>[1];
    expect(typed(() => makeIdempotent(async () => 1, noKey))).toBe(true);
    expect(typed(() => idempotency({ store: env.store } as never))).toBe(true);
    expect(typed(() => makeSqsBatchHandler(undefined as never, { store: env.store }))).toBe(true);
    expect(
      typed(() =>
        makeIdempotent(undefined as never, {
          scope: functionScope,
          store: env.store,
          key: () => 'k',
        }),
      ),
    ).toBe(true);
  });

  // Held: engine options that reach core unchanged are typed errors at creation.
  it('NaN lease, zero retention, negative heartbeat are typed errors at creation', () => {
    for (const bad of [{ leaseMs: Number.NaN }, { retentionMs: 0 }, { heartbeatMs: -1 }]) {
      let caught: unknown;
      try {
        makeSqsBatchHandler(async () => 1, { store: env.store, ...bad });
      } catch (error) {
        caught = error;
      }
      expect(isIdemError(caught) && caught.code).toBe('INVALID_INPUT');
    }
  });

  // FINDING (MEDIUM; fixed: the user's engine options go to createIdempotency unclamped at
  // creation (validateEngineOptions); only valid values are clamped per invocation): `engineForInvocation` clamps the lease and the hold with
  // `Math.max(1, Math.min(option, remaining))` before core sees them, so `leaseMs: 0`,
  // `leaseMs: -1` or `maxHoldMs: -5` (refused by `createIdempotency` with INVALID_INPUT) are
  // silently accepted by makeIdempotent / the batch handlers / idempotency() and become a
  // 1 ms lease with a 0.33 ms heartbeat: the store is hammered, and mutual exclusion is gone:
  // a duplicate 50 ms later takes the key over and runs the handler again while the first
  // still runs (the first then fails with LeaseLostError). Reproduce: makeIdempotent(slow,
  // { store, key, leaseMs: 0 }), invoke twice 50 ms apart: two runs. Fix: validate the
  // user's options first (pass them to createIdempotency unclamped once at creation), and
  // clamp only a valid lease by the remaining time.
  it('leaseMs 0 / -1 and maxHoldMs -5 are typed errors at creation', () => {
    for (const bad of [{ leaseMs: 0 }, { leaseMs: -1 }, { maxHoldMs: -5 }]) {
      let caught: unknown;
      try {
        makeIdempotent(async () => 1, {
          scope: functionScope,
          store: env.store,
          key: () => 'k',
          ...bad,
        });
      } catch (error) {
        caught = error;
      }
      expect(isIdemError(caught) && caught.code).toBe('INVALID_INPUT');
    }
  });

  // FINDING (MEDIUM; fixed with the above: `leaseMs: 0` is refused at creation), the consequence of the above: with `leaseMs: 0` accepted, a
  // concurrent duplicate runs the handler a second time.
  it('leaseMs 0: a concurrent duplicate never runs the handler twice', async () => {
    let runs = 0;
    let handler: ((event: { id: string }, context: Context) => Promise<number>) | undefined;
    try {
      handler = makeIdempotent(
        async (_event: { id: string }) => {
          runs += 1;
          await sleep(300);
          return runs;
        },
        { scope: functionScope, store: env.store, key: (event) => event.id, leaseMs: 0 },
      );
    } catch {
      return; // refused at creation: what should happen
    }
    const first = handler({ id: 'lease0' }, fakeContext(10_000)).catch((e: unknown) => e);
    for (let i = 0; i < 4; i++) {
      await sleep(50);
      await handler({ id: 'lease0' }, fakeContext(10_000)).catch(() => {});
    }
    await first;
    await sleep(350); // let any second run finish before the store closes
    expect(runs).toBe(1);
  });
});

describe.each(storeKinds)('lamrev: partial batches on %s', (kind) => {
  let env: Env;
  beforeEach(async () => {
    env = await openEnv(kind);
  });
  afterEach(async () => {
    await env.close();
  });

  // Held: a standard-queue batch with failures reports exactly the failed messageIds; the
  // redelivery of the WHOLE batch (what Lambda does when the response is lost or the
  // function errors) re-runs only the failed ones, and a handler that throws after its
  // fenced side effect runs again with a higher fence (the ledger keeps one entry per id).
  it('SQS: exactly the failed items are reported; a whole-batch redelivery re-runs only them', async () => {
    const runs = new Map<string, number>();
    let failing = true;
    const handler = makeSqsBatchHandler(
      async (record: SQSRecord, _ctx, { fence }) => {
        const job = jobOf(record.body);
        runs.set(job.id, (runs.get(job.id) ?? 0) + 1);
        await env.ledger.write(job.id, fence, `fence ${fence}`);
        if (job.fail && failing) throw new Error('after the side effect');
        return job.id;
      },
      { store: env.store },
    );
    const records = [0, 1, 2, 3, 4, 5].map((i) =>
      sqsRecord(JSON.stringify({ id: `p${i}`, fail: i % 3 === 1 })),
    );
    const event: SQSEvent = { Records: records };
    const first = await handler(event, fakeContext(20_000));
    expect(first.batchItemFailures.map((f) => f.itemIdentifier).sort()).toEqual(
      [records[1], records[4]].map((r) => (r as SQSRecord).messageId).sort(),
    );
    // Lambda redelivers the whole batch (e.g. the first response was lost).
    failing = false;
    const second = await handler(redeliver(event), fakeContext(20_000));
    expect(second.batchItemFailures).toEqual([]);
    expect(Object.fromEntries(runs)).toEqual({ p0: 1, p1: 2, p2: 1, p3: 1, p4: 2, p5: 1 });
    const entries = await env.ledger.entries();
    expect(entries.get('p1')?.fence).toBe(2);
    expect(entries.get('p0')?.fence).toBe(1);
    // A third delivery is all replays.
    const third = await handler(redeliver(event), fakeContext(20_000));
    expect(third.batchItemFailures).toEqual([]);
    expect([...runs.values()].reduce((a, b) => a + b, 0)).toBe(8);
  });

  // Held: Kinesis, the same record twice in one batch, and a failure after it: the copy is a
  // replay; the failure stops the shard and every later record (incl. a duplicate of the
  // failed one) is reported; the redelivery runs the failed one once more, the others replay.
  it('Kinesis: duplicates inside a batch and an ordered failure', async () => {
    const runs: string[] = [];
    let failB = true;
    const reports: [string, RecordStatus][] = [];
    const handler = makeKinesisBatchHandler(
      async (record) => {
        const id = Buffer.from(record.kinesis.data, 'base64').toString();
        runs.push(id);
        if (id === 'B' && failB) throw new Error('poison for now');
        return id;
      },
      {
        store: env.store,
        onRecord: (r: RecordReport<ReturnType<typeof kinesisRecord>>) =>
          reports.push([Buffer.from(r.record.kinesis.data, 'base64').toString(), r.status]),
      },
    );
    const a = kinesisRecord('A');
    const b = kinesisRecord('B');
    const c = kinesisRecord('C');
    const batch = { Records: [a, a, b, c] };
    const first = await handler(batch, fakeContext(20_000));
    expect(reports).toEqual([
      ['A', 'processed'],
      ['A', 'replayed'],
      ['B', 'failed'],
      ['C', 'not_attempted'],
    ]);
    expect(first.batchItemFailures.map((f) => f.itemIdentifier)).toEqual([
      b.kinesis.sequenceNumber,
      c.kinesis.sequenceNumber,
    ]);
    failB = false;
    reports.length = 0;
    const second = await handler({ Records: [b, c] }, fakeContext(20_000));
    expect(second.batchItemFailures).toEqual([]);
    expect(runs).toEqual(['A', 'B', 'B', 'C']);
  });

  // Held: a duplicate delivered while the first is in flight in another invocation fails at
  // once (InProgressError), and replays after; the handler ran once.
  it('makeIdempotent: a concurrent duplicate is InProgressError, then a replay', async () => {
    let runs = 0;
    const handler = makeIdempotent(
      async (_event: { id: string }) => {
        runs += 1;
        await sleep(400);
        return { charged: runs };
      },
      { scope: functionScope, store: env.store, key: (event) => event.id },
    );
    const first = handler({ id: 'conc-1' }, fakeContext(10_000));
    await sleep(100);
    await expect(handler({ id: 'conc-1' }, fakeContext(10_000))).rejects.toBeInstanceOf(
      InProgressError,
    );
    expect(await first).toEqual({ charged: 1 });
    expect(await handler({ id: 'conc-1' }, fakeContext(10_000))).toEqual({ charged: 1 });
    expect(runs).toBe(1);
  });
});
