import { everythingFinal, OutcomeNotRecordedError, ReplayedFailureError } from '@idem/core';
import { expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import { functionScope, idempotency, makeIdempotent } from '../src/index.js';
import { fakeContext } from './lambda-env.js';
import { describeMiddy } from './middy-versions.js';

// mutcl (second mutation audit): once the handler has returned, the key is never released,
// whatever becomes of its answer: a retry must get OutcomeNotRecordedError, not a second run.

type Ev = { id: string };

describeMiddy(
  'mutcl: Middy idempotency(), a returned handler whose answer cannot be recorded',
  ({ middy }) => {
    const wrap = (runs: { n: number }, value: () => unknown, later?: object) => {
      const handler = middy(async (_event: Ev) => {
        runs.n += 1;
        return value();
      }).use(
        idempotency({
          scope: functionScope,
          store: createMemoryStore(),
          key: (event: Ev) => event.id,
        }),
      );
      return later ? handler.use(later) : handler;
    };

    it('the handler returns a value JSON cannot hold: the caller and the retry get OutcomeNotRecordedError, one run', async () => {
      const runs = { n: 0 };
      const handler = wrap(runs, () => ({ total: 10n }));
      await expect(handler({ id: 'big' }, fakeContext(10_000))).rejects.toBeInstanceOf(
        OutcomeNotRecordedError,
      );
      await expect(handler({ id: 'big' }, fakeContext(10_000))).rejects.toBeInstanceOf(
        OutcomeNotRecordedError,
      );
      expect(runs.n).toBe(1);
    });

    it('a later `after` makes the response a rejecting promise: the retry gets OutcomeNotRecordedError, one run', async () => {
      const runs = { n: 0 };
      const handler = wrap(runs, () => 'ok', {
        after: async (request: { response: unknown }) => {
          const rejecting = Promise.reject(new Error('response signer down'));
          rejecting.catch(() => {});
          request.response = rejecting;
        },
      });
      await expect(handler({ id: 'rejects' }, fakeContext(10_000))).rejects.toThrow(
        'response signer down',
      );
      await expect(handler({ id: 'rejects' }, fakeContext(10_000))).rejects.toBeInstanceOf(
        OutcomeNotRecordedError,
      );
      expect(runs.n).toBe(1);
    });

    it('a later `after` answers early with a rejecting promise: the retry gets OutcomeNotRecordedError, one run', async () => {
      const runs = { n: 0 };
      const handler = wrap(runs, () => 'ok', {
        after: async (request: { earlyResponse?: unknown }) => {
          const rejecting = Promise.reject(new Error('early answer failed'));
          rejecting.catch(() => {});
          request.earlyResponse = rejecting;
        },
      });
      await expect(handler({ id: 'early-rejects' }, fakeContext(10_000))).rejects.toThrow(
        'early answer failed',
      );
      await expect(handler({ id: 'early-rejects' }, fakeContext(10_000))).rejects.toBeInstanceOf(
        OutcomeNotRecordedError,
      );
      expect(runs.n).toBe(1);
    });

    it("a failure recorded under the key (makeIdempotent with everythingFinal, the same function's scope) replays as ReplayedFailureError, not as a value", async () => {
      const store = createMemoryStore();
      const recorder = makeIdempotent(
        async (_event: Ev) => {
          throw new Error('card declined');
        },
        { scope: functionScope, store, key: (event: Ev) => event.id, isFinal: everythingFinal },
      );
      await expect(recorder({ id: 'declined' }, fakeContext(10_000))).rejects.toThrow(
        'card declined',
      );
      let runs = 0;
      const handler = middy(async (_event: Ev) => {
        runs += 1;
        return 'charged';
      }).use(idempotency({ scope: functionScope, store, key: (event: Ev) => event.id }));
      await expect(handler({ id: 'declined' }, fakeContext(10_000))).rejects.toBeInstanceOf(
        ReplayedFailureError,
      );
      expect(runs).toBe(0);
    });
  },
);
