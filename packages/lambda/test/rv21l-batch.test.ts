import type { IdempotencyStore } from '@idem/core';
import type { Context, SQSRecord } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import { latenessAround, sampleLoopLateness } from '../../../scripts/loop-lateness.js';
import { createMemoryStore } from '../../store-memory/src/index.js';
import { makeSqsBatchHandler, type RecordReport } from '../src/index.js';
import { fakeContext, sleep, sqsRecord, useEnv } from './lambda-env.js';

// rv21l review of lambda21 (a timed-out batch record: its signal aborts, a late acquisition is
// given back unrun): can the late record's writes race the redelivery's, can a record be
// reported twice, is the batch's answer bounded when the store hangs?

/**
 * `store` whose calls named in `answerLate` land at once and answer that many ms late, and those
 * in `landLate` land that many ms late; what each call answered goes to `answers`.
 */
function delayed(
  store: IdempotencyStore,
  answerLate: Record<string, number>,
  landLate: Record<string, number>,
  answers: Array<{ call: string; answer: unknown }> = [],
): IdempotencyStore {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      const call = String(prop);
      if (typeof v !== 'function') return v;
      if (answerLate[call] === undefined && landLate[call] === undefined) return v.bind(target);
      return async (...args: unknown[]) => {
        await sleep(landLate[call] ?? 0);
        const answer = await (v as (...a: unknown[]) => unknown).apply(target, args);
        answers.push({ call, answer });
        await sleep(answerLate[call] ?? 0);
        return answer;
      };
    },
  });
}

const statuses = (reports: RecordReport<SQSRecord>[]) => reports.map((r) => r.status);

for (const kind of ['memory', 'redis'] as const) {
  describe(`rv21l: a timed-out batch record (${kind})`, () => {
    const env = useEnv('redis');
    const store = () => (kind === 'redis' ? env().store : memory);
    let memory: IdempotencyStore = createMemoryStore();

    it('held: a late acquisition (answered after the give-up) whose release lands after the redelivery took the key over frees nothing', async () => {
      memory = createMemoryStore();
      let lateRuns = 0;
      const reports: RecordReport<SQSRecord>[] = [];
      // The acquisition lands at once, is answered at ~600 ms (the batch gave up at ~500 ms),
      // and the release it makes lands ~700 ms later: after the lease lapsed (~800 ms) and the
      // redelivery took the key over (~900 ms).
      const answers: Array<{ call: string; answer: unknown }> = [];
      const late = makeSqsBatchHandler(
        async () => {
          lateRuns += 1;
          return 'late';
        },
        {
          store: delayed(store(), { acquire: 600 }, { release: 700 }, answers),
          timeoutMarginMs: 300,
          onRecord: (r) => reports.push(r as RecordReport<SQSRecord>),
        },
      );
      let runs = 0;
      const fast = makeSqsBatchHandler(
        async (record: SQSRecord) => {
          runs += 1;
          await sleep(1_000);
          return `${record.body} shipped`;
        },
        { store: store(), onRecord: (r) => reports.push(r as RecordReport<SQSRecord>) },
      );
      const record = sqsRecord(`order-late-${kind}`);
      await late({ Records: [record] }, fakeContext(800));
      expect(statuses(reports)).toEqual(['timed_out']);
      await sleep(400); // ~900 ms: the late acquisition's lease has lapsed
      reports.length = 0;
      const redelivery = fast({ Records: [record] }, fakeContext(10_000));
      await sleep(600); // ~1500 ms: the late release has landed (~1300 ms)
      // A third delivery while the redelivery runs: the key is still the redelivery's.
      const third = await fast({ Records: [record] }, fakeContext(10_000));
      expect(third.batchItemFailures).toEqual([{ itemIdentifier: record.messageId }]);
      expect((await redelivery).batchItemFailures).toEqual([]);
      expect(statuses(reports).sort()).toEqual(['failed', 'processed']);
      reports.length = 0;
      await fast({ Records: [record] }, fakeContext(10_000));
      expect(statuses(reports)).toEqual(['replayed']);
      expect(lateRuns).toBe(0);
      expect(runs).toBe(1);
      // The late acquisition was granted, and its release, landing after the takeover, refused.
      expect(answers.map((a) => a.call)).toEqual(['acquire', 'release']);
      expect((answers[0]?.answer as { kind?: string } | undefined)?.kind).toBe('acquired');
      expect(answers[1]?.answer).toEqual({ ok: false, reason: 'not_owner' });
    });

    it('held: a record given up, whose handler ends later within its lease, is reported once (timed_out), never processed; the redelivery replays it', async () => {
      memory = createMemoryStore();
      let runs = 0;
      const reports: RecordReport<SQSRecord>[] = [];
      let lateDone: Promise<void> | undefined;
      const handler = makeSqsBatchHandler(
        async (record: SQSRecord, _ctx: Context) => {
          runs += 1;
          if (record.body === 'slow') {
            lateDone = sleep(600); // ignores its signal: ends at ~600 ms, within its lease
            await lateDone;
          }
          return `${record.body} shipped`;
        },
        {
          store: store(),
          timeoutMarginMs: 500,
          onRecord: (r) => reports.push(r as RecordReport<SQSRecord>),
        },
      );
      const records = [sqsRecord('quick'), sqsRecord('slow'), sqsRecord('never')];
      // Deadline at ~400 ms (800 less the margin, capped at half): the slow record is given
      // up, the last not attempted.
      const answer = await handler({ Records: records }, fakeContext(800));
      await lateDone;
      await sleep(150); // its outcome lands
      expect(statuses(reports)).toEqual(['processed', 'timed_out', 'not_attempted']);
      expect(answer.batchItemFailures).toEqual([
        { itemIdentifier: records[1]?.messageId },
        { itemIdentifier: records[2]?.messageId },
      ]);
      reports.length = 0;
      const again = await handler({ Records: records }, fakeContext(10_000));
      expect(again.batchItemFailures).toEqual([]);
      expect(statuses(reports)).toEqual(['replayed', 'replayed', 'processed']);
      expect(runs).toBe(3);
    });

    it('held: a store whose acquisition never answers: the batch answers at its deadline (timed_out), not later', async () => {
      memory = createMemoryStore();
      sampleLoopLateness();
      const hanging = new Proxy(store(), {
        get(target, prop, receiver) {
          const v = Reflect.get(target, prop, receiver);
          if (prop === 'acquire') return () => new Promise(() => {});
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
      const reports: RecordReport<SQSRecord>[] = [];
      let runs = 0;
      const handler = makeSqsBatchHandler(
        async () => {
          runs += 1;
        },
        {
          store: hanging,
          timeoutMarginMs: 200,
          onRecord: (r) => reports.push(r as RecordReport<SQSRecord>),
        },
      );
      const start = performance.now();
      const answer = await handler({ Records: [sqsRecord('a'), sqsRecord('b')] }, fakeContext(600));
      const end = performance.now();
      expect(statuses(reports)).toEqual(['timed_out', 'not_attempted']);
      expect(answer.batchItemFailures).toHaveLength(2);
      // Due at 400 ms (600 - 200); promise hops and a timer's granularity on top.
      expect(end - start - latenessAround(start, end, [400])).toBeLessThan(400 + 50);
      expect(runs).toBe(0);
    });
  });
}
