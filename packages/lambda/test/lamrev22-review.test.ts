import {
  everythingFinal,
  type IdempotencyStore,
  OutcomeNotRecordedError,
  type OutcomePolicy,
} from '@idem/core';
import type { Context, SQSRecord } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import {
  functionScope,
  type IdempotencyInfo,
  idempotency,
  makeSqsBatchHandler,
  type RecordReport,
} from '../src/index.js';
import {
  fakeContext,
  settle,
  sleep,
  sqsRecord,
  twoMiddlewares,
  useEnv,
  withoutCallSites,
} from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// lamrev22: adversarial review of two merged changes.
// (1) batch.ts: a record's failure after the batch gave it up (timed_out, signal aborted) is
//     released whatever `isFinal` says.
// (2) middy.ts: a second catch-like pair written in the synchronous step of an ambiguous one
//     (a first onError normalizing the error) leaves the pair undecided: released as any throw.

type Ev = { id: string };
type Settled = { value?: unknown; error?: unknown };
// biome-ignore lint/suspicious/noExplicitAny: a Middy request poked at as any middleware would
type Req = any;

const statuses = (reports: RecordReport<SQSRecord>[]) => reports.map((r) => r.status);

/** Delivers `record` again (up to 10 times, 50 ms apart) while it is in progress elsewhere. */
async function redeliverUntilFree(
  handler: (event: { Records: SQSRecord[] }, context: Context) => Promise<unknown>,
  record: SQSRecord,
  reports: RecordReport<SQSRecord>[],
): Promise<string[]> {
  let seen: string[] = [];
  for (let i = 0; i < 10; i++) {
    reports.length = 0;
    await handler({ Records: [record] }, fakeContext(10_000));
    seen = statuses(reports);
    if (seen[0] !== 'failed' || !/progress/i.test(String(reports[0]?.error))) break;
    await sleep(50);
  }
  return seen;
}

/**
 * A batch handler whose runs take `ms(record, run)`, then end with `end(record, run)` (its
 * value, or its throw); `run` counts the runs of that record from 1; `late()` is the last sleep.
 */
function slowRecords(
  store: IdempotencyStore,
  isFinal: OutcomePolicy<unknown> | undefined,
  ms: (record: SQSRecord, run: number) => number,
  end: (record: SQSRecord, run: number) => unknown,
) {
  const runs = new Map<string, number>();
  let late: Promise<void> = Promise.resolve();
  const reports: RecordReport<SQSRecord>[] = [];
  const handler = makeSqsBatchHandler(
    async (record: SQSRecord) => {
      const run = (runs.get(record.body) ?? 0) + 1;
      runs.set(record.body, run);
      late = sleep(Math.max(0, ms(record, run)));
      await late;
      return end(record, run);
    },
    { store, isFinal, timeoutMarginMs: 300, onRecord: (r) => reports.push(r) },
  );
  return { handler, reports, runs: () => Object.fromEntries(runs), late: () => late };
}

for (const kind of ['memory', 'redis'] as const) {
  describe(`lamrev22: batch give-up (${kind})`, () => {
    const env = useEnv('redis');
    let memory: IdempotencyStore = createMemoryStore();
    const store = () => (kind === 'redis' ? env().store : memory);

    it('held: a handler that ignores the signal and succeeds after the give-up (within its lease) is recorded: the redelivery replays it, one run (any isFinal)', async () => {
      for (const isFinal of [undefined, everythingFinal]) {
        memory = createMemoryStore();
        const b = slowRecords(
          store(),
          isFinal,
          () => 450,
          (record) => `${record.body} shipped`,
        );
        const record = sqsRecord(`ok-late-${isFinal ? 'final' : 'default'}`);
        // Deadline ~500 ms, given up at ~250 ms; the lease lasts until ~500 ms.
        const first = await b.handler({ Records: [record] }, fakeContext(500));
        expect(statuses(b.reports)).toEqual(['timed_out']);
        expect(first.batchItemFailures).toEqual([{ itemIdentifier: record.messageId }]);
        await b.late();
        await sleep(30); // (its complete lands)
        expect(await redeliverUntilFree(b.handler, record, b.reports)).toEqual(['replayed']);
        expect(b.runs()).toEqual({ [record.body]: 1 });
      }
    });

    // FIXED (was FINDING MEDIUM): with `isFinal: everythingFinal` ("everything is final once
    // execution started"), a handler that never read its signal (so the give-up could not have
    // stopped it) and fails on its own after the give-up, while it still owns the key (a
    // business refusal after its side effects), was released: the redelivery ran it a second
    // time. The give-up now overrides the policy only for a handler that read its signal (its
    // failure may be the abort's); another failure is the policy's, as before the deadline.
    it('isFinal: everythingFinal: a handler that never read its signal and fails after the give-up: the failure is final (replayed), no second run', async () => {
      memory = createMemoryStore();
      const b = slowRecords(
        store(),
        everythingFinal,
        () => 400,
        () => {
          throw new Error('declined');
        },
      );
      const record = sqsRecord('declined-late');
      await b.handler({ Records: [record] }, fakeContext(600));
      expect(statuses(b.reports)).toEqual(['timed_out']);
      await b.late();
      await sleep(30);
      expect(await redeliverUntilFree(b.handler, record, b.reports)).toEqual(['replayed']);
      expect(b.runs()).toEqual({ [record.body]: 1 });
    });

    // FIXED (the same finding, for a custom policy): it was never asked (the wrapper short-cut
    // it), so a failure it calls final was released and the redelivery ran again.
    it("a custom policy sees the handler's own error (never a wrapper) when it failed after the give-up without reading its signal", async () => {
      memory = createMemoryStore();
      class Permanent extends Error {}
      const seen: unknown[] = [];
      const policy: OutcomePolicy<unknown> = (settled) => {
        if (!settled.ok) seen.push(settled.error);
        return settled.ok || settled.error instanceof Permanent;
      };
      const b = slowRecords(
        store(),
        policy,
        () => 400,
        () => {
          throw new Permanent('no such customer');
        },
      );
      const record = sqsRecord('permanent-late');
      await b.handler({ Records: [record] }, fakeContext(600));
      await b.late();
      await sleep(30);
      expect(seen).toHaveLength(1);
      expect(seen[0]).toBeInstanceOf(Permanent);
      expect(await redeliverUntilFree(b.handler, record, b.reports)).toEqual(['replayed']);
      expect(b.runs()).toEqual({ [record.body]: 1 });
    });

    it('held: a handler that reads its signal and throws after the abort (an Error, a string, undefined) is released under everythingFinal: the redelivery runs', async () => {
      for (const thrown of ['error', 'string', 'undefined'] as const) {
        memory = createMemoryStore();
        let runs = 0;
        const reports: RecordReport<SQSRecord>[] = [];
        let stopped: Promise<void> | undefined;
        const handler = makeSqsBatchHandler(
          async (record: SQSRecord, _ctx: Context, idem: IdempotencyInfo) => {
            runs += 1;
            if (runs > 1) return `${record.body} shipped`;
            const { signal } = idem;
            stopped = new Promise<void>((resolve) =>
              signal.addEventListener('abort', () => resolve(), { once: true }),
            );
            await stopped;
            if (thrown === 'error') throw new Error('gave up downstream');
            if (thrown === 'string') throw 'stopped';
            throw undefined;
          },
          {
            store: store(),
            isFinal: everythingFinal,
            timeoutMarginMs: 300,
            onRecord: (r) => reports.push(r),
          },
        );
        const record = sqsRecord(`aborted-${thrown}`);
        await handler({ Records: [record] }, fakeContext(800));
        expect(statuses(reports)).toEqual(['timed_out']);
        await stopped;
        expect(await redeliverUntilFree(handler, record, reports)).toEqual(['processed']);
        expect(runs).toBe(2);
      }
    });

    it('held: a failure right around the deadline (everythingFinal): what the report and the redelivery say agree; never held to the lease, at most one run per release', async () => {
      // (The handler fails 2 ms before to 2 ms after the batch's timer; each outcome is allowed,
      // but a recorded failure must be replayed and a released one run again.)
      for (const offset of [-2, -1, 0, 1, 2]) {
        memory = createMemoryStore();
        let deadlineAt = 0;
        const b = slowRecords(
          store(),
          everythingFinal,
          (_record, run) => (run > 1 ? 0 : deadlineAt - performance.now() + offset),
          (_record, run) => {
            if (run > 1) return 'second';
            throw new Error('declined');
          },
        );
        const record = sqsRecord(`edge-${offset}`);
        deadlineAt = performance.now() + 300;
        await b.handler({ Records: [record] }, fakeContext(600));
        const first = statuses(b.reports);
        expect(['failed', 'timed_out']).toContain(first[0]);
        await b.late();
        await sleep(50);
        const again = await redeliverUntilFree(b.handler, record, b.reports);
        if (again[0] === 'replayed') expect(b.runs()).toEqual({ [record.body]: 1 });
        else {
          // Released: allowed only for a failure the batch gave up on before it came.
          expect(first).toEqual(['timed_out']);
          expect(again).toEqual(['processed']);
          expect(b.runs()).toEqual({ [record.body]: 2 });
        }
      }
    });

    it('held: FIFO: the given-up record succeeds late, the later one is not attempted; the redelivery replays the first and runs the second once', async () => {
      memory = createMemoryStore();
      const b = slowRecords(
        store(),
        undefined,
        (record) => (record.body === 'fifo-1' ? 400 : 0),
        (record) => `${record.body} done`,
      );
      const records = [sqsRecord('fifo-1', true), sqsRecord('fifo-2', true)];
      const first = await b.handler({ Records: records }, fakeContext(600));
      expect(statuses(b.reports)).toEqual(['timed_out', 'not_attempted']);
      expect(first.batchItemFailures.map((f) => f.itemIdentifier)).toEqual(
        records.map((r) => r.messageId),
      );
      await b.late();
      await sleep(30);
      b.reports.length = 0;
      const again = await b.handler({ Records: records }, fakeContext(10_000));
      expect(statuses(b.reports)).toEqual(['replayed', 'processed']);
      expect(again.batchItemFailures).toEqual([]);
      expect(b.runs()).toEqual({ 'fifo-1': 1, 'fifo-2': 1 });
    });
  });
}

/** A handler that throws `first` at its first run and returns 'ok' after; `runs()` counts. */
function flaky(first: unknown = new Error('transient')) {
  let count = 0;
  const run = async () => {
    count += 1;
    if (count === 1) throw first;
    return 'ok';
  };
  return { run, runs: () => count };
}

/** A handler that returns `value` (default `undefined`); `runs()` counts. */
function returning(value?: unknown) {
  let count = 0;
  const run = async () => {
    count += 1;
    return value;
  };
  return { run, runs: () => count };
}

/** An `onError` that writes `response = undefined` and a new error, after `await`ing or not. */
const normalizer = (awaits: boolean, error: () => unknown = () => new Error('normalized')) => ({
  onError: async (request: Req) => {
    if (awaits) await Promise.resolve();
    // (only the handler's error: a retry's own error goes out as it is)
    if (awaits && (request.error as Error).message !== 'transient') return;
    request.response = undefined;
    request.error = error();
  },
});

/** An `after` that awaits, then writes `response = undefined` and an error, without throwing. */
const notingAfter = {
  after: async (request: Req) => {
    await sleep(5);
    request.response = undefined;
    request.error = new Error('noted');
  },
};

/** An `after` that writes two catch-like pairs in its synchronous start, then throws or not. */
const twoPairs = (throws: boolean) => ({
  after: (request: Req) => {
    request.error = new Error('soft');
    request.response = undefined;
    request.error = new Error('softer');
    // (a plain function: its throw reaches Middy's catch with no `await` of its own)
    if (throws) throw new Error('invalid response');
  },
});

describeMiddy('lamrev22: Middy, a second error pair (redis)', ({ middy }) => {
  const env = useEnv('redis');

  const idem = () =>
    idempotency({ scope: functionScope, store: env().store, key: (e: Ev) => e.id });

  /** Calls `handler` twice with `id`: what each call gave. */
  const twice = async (
    handler: (e: Ev, c: Context) => Promise<unknown>,
    id: string,
  ): Promise<[Settled, Settled]> => [
    await settle(handler({ id }, fakeContext(10_000))),
    await settle(handler({ id }, fakeContext(10_000))),
  ];

  it('held: the first `onError` normalizes to a string or undefined in its synchronous start: released, the retry runs', async () => {
    for (const normalized of ['normalized', undefined]) {
      const h = flaky();
      const handler = middy(h.run)
        .use(idem())
        .use(normalizer(false, () => normalized));
      const [first, retry] = await twice(handler, `norm-${String(normalized)}`);
      expect('error' in first && first.error === normalized).toBe(true);
      expect(retry).toEqual({ value: 'ok' });
      expect(h.runs()).toBe(2);
    }
  });

  it('held: the handler throws undefined, the first `onError` normalizes it: released, the retry runs', async () => {
    const h = flaky(undefined);
    const handler = middy(h.run).use(idem()).use(normalizer(false));
    const [first, retry] = await twice(handler, 'throw-undef');
    expect((first as { error: Error }).error.message).toBe('normalized');
    expect(retry).toEqual({ value: 'ok' });
    expect(h.runs()).toBe(2);
  });

  it('held: an `onError` that awaits, then only replaces request.error (http-error-handler style): released', async () => {
    const h = flaky();
    const handler = middy(h.run)
      .use(idem())
      .use({
        onError: async (request: Req) => {
          await sleep(5);
          request.error = new Error('normalized');
        },
      });
    const [first, retry] = await twice(handler, 'await-err');
    expect((first as { error: Error }).error.message).toBe('normalized');
    expect(retry).toEqual({ value: 'ok' });
    expect(h.runs()).toBe(2);
  });

  // FIXED (lamfix; was FINDING MEDIUM): the merged fix covered only a normalizer that writes in
  // its synchronous start. The same first `onError` that awaits anything first (even an already
  // settled promise: a logger flush, a config read) and then writes `request.response =
  // undefined; request.error = ...` left a not-recorded marker: the handler THREW, yet every
  // retry got OutcomeNotRecordedError and it never ran again. By writes alone that second pair
  // is the same as Middy's catch of a later `after`'s throw once the handler returned
  // `undefined` and the first `after` wrote request.error. Now idempotency() knows Middy's own
  // write of request.error by its call site (Middy's `runRequest`; a hook's write has Middy's
  // `runMiddlewares` below it, after an `await` too): the first pair is Middy's catch, released
  // at its write, and the hook's later pair changes nothing. (Without V8 call sites the cost
  // stays: the pinned test below.)
  it('without idem.last: the handler throws, the first `onError` awaits, then writes response = undefined and a new error: released, the retry runs', async () => {
    const h = flaky();
    const handler = middy(h.run).use(idem()).use(normalizer(true));
    const [first, retry] = await twice(handler, 'await-norm');
    expect((first as { error: Error }).error.message).toBe('normalized');
    expect(retry).toEqual({ value: 'ok' });
    expect(h.runs()).toBe(2);
  });

  it('held: the cost above without call sites, pinned: never a second run (the retry gets OutcomeNotRecordedError)', async () => {
    await withoutCallSites(async () => {
      const h = flaky();
      const handler = middy(h.run).use(idem()).use(normalizer(true));
      const [, retry] = await twice(handler, 'await-norm-pin');
      expect((retry as { error: unknown }).error).toBeInstanceOf(OutcomeNotRecordedError);
      expect(h.runs()).toBe(1);
    });
  });

  it('held: with idem.last, the first `onError` awaits, then normalizes: released, the retry runs', async () => {
    const h = flaky();
    const i = idem();
    const handler = middy(h.run).use(i).use(normalizer(true)).use(i.last);
    const [first, retry] = await twice(handler, 'await-norm-last');
    expect((first as { error: Error }).error.message).toBe('normalized');
    expect(retry).toEqual({ value: 'ok' });
    expect(h.runs()).toBe(2);
  });

  it('held: two idempotency() (two keys), the handler throws, the first `onError` normalizes in its synchronous start: both released, the retry runs once more', async () => {
    const h = flaky();
    const [outer, inner] = twoMiddlewares(env().store);
    const handler = middy(h.run).use(outer).use(inner).use(normalizer(false));
    const [first, retry] = await twice(handler, 'two');
    expect((first as { error: Error }).error.message).toBe('normalized');
    expect(retry).toEqual({ value: 'ok' });
    expect(await handler({ id: 'two' }, fakeContext(10_000))).toBe('ok');
    expect(h.runs()).toBe(2);
  });

  it('held: the handler returns undefined, the first `after` writes two pairs in one step and a later `after` awaits, then throws: a marker, one run', async () => {
    const h = returning();
    const handler = middy(h.run)
      .use(idem())
      .use({
        after: async () => {
          await sleep(5);
          throw new Error('invalid response');
        },
      })
      .use(twoPairs(false));
    const [first, retry] = await twice(handler, 'two-pairs-await');
    expect((first as { error: Error }).error.message).toBe('invalid response');
    expect((retry as { error: unknown }).error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(h.runs()).toBe(1);
  });

  it('held: the handler returns undefined, the first `after` writes two pairs in one step, then throws itself: a marker, one run', async () => {
    const h = returning();
    const handler = middy(h.run).use(idem()).use(twoPairs(true));
    const [first, retry] = await twice(handler, 'two-pairs-sync-throw');
    expect((first as { error: Error }).error.message).toBe('invalid response');
    expect((retry as { error: unknown }).error).toBeInstanceOf(OutcomeNotRecordedError);
    expect(h.runs()).toBe(1);
  });

  // FIXED (lamfix; was FINDING LOW, pre-existing): an `after` hook that awaits, then writes
  // `request.response = undefined; request.error = ...` WITHOUT throwing, after the handler
  // returned: the pair was taken for Middy's catch of a later hook and a not-recorded marker was
  // written at once, though the `after` chain completes and Middy returns `undefined`: the
  // caller got an answer, the retry got OutcomeNotRecordedError instead of its replay. It was
  // decided at the pair because a later `onError` that throws may end the invocation with no
  // other sign. Now the writer's call site tells: this write is a hook's (Middy's
  // `runMiddlewares` is below it), which changes nothing, and the catch of any later throw is
  // Middy's own write, decided at once (a marker). (Without V8 call sites it stays: next test.)
  it('an `after` that awaits, then writes response = undefined and an error without throwing: the answer (undefined) is recorded and replayed', async () => {
    const h = returning({ statusCode: 200 });
    const handler = middy(h.run).use(idem()).use(notingAfter);
    expect(await twice(handler, 'after-noted')).toEqual([
      { value: undefined },
      { value: undefined },
    ]);
    expect(h.runs()).toBe(1);
  });

  it('held: the same noting `after`, then a later `after` that throws or not: a marker or the replay, one run; without call sites the noted pair alone leaves a marker', async () => {
    for (const sites of [true, false]) {
      for (const laterThrows of [true, false]) {
        const h = returning({ statusCode: 200 });
        const handler = middy(h.run)
          .use(idem())
          .use({
            after: async () => {
              if (laterThrows) throw new Error('invalid response');
            },
          })
          .use(notingAfter);
        const id = `noted-then-${sites}-${laterThrows}`;
        const [first, retry] = sites
          ? await twice(handler, id)
          : await withoutCallSites(() => twice(handler, id));
        if (laterThrows) {
          expect((first as { error: Error }).error.message).toBe('invalid response');
          expect((retry as { error: unknown }).error).toBeInstanceOf(OutcomeNotRecordedError);
        } else {
          expect(first).toEqual({ value: undefined });
          if (sites) expect(retry).toEqual({ value: undefined });
          else expect((retry as { error: unknown }).error).toBeInstanceOf(OutcomeNotRecordedError);
        }
        expect(h.runs()).toBe(1);
      }
    }
  });
});
