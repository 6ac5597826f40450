// consumers-late: a success whose isFinal policy threw `undefined` of it is kept (recorded,
// acked) like any other policy fault, and the fault is said: the disposition and the report
// carry an `error` (the thrown value, `undefined` too). It was told apart by
// `policyError !== undefined`: a thrown `undefined` was acked with no error, as a clean
// success (the same fix as @idem/lambda's batch handlers).
import type { OutcomePolicy } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { type MessageReport, messageProcessor } from '../src/index.js';
import { redisBed, uniqueName } from './brokers.js';

interface Msg {
  id: string;
}

const { redis, prefix } = redisBed('idem-policy-undefined');

const throwingOfSuccess =
  (thrown: unknown): OutcomePolicy<unknown> =>
  (settled) => {
    if (settled.ok) throw thrown;
    return false;
  };

function processor(isFinal: OutcomePolicy<unknown>) {
  const reports: MessageReport<Msg>[] = [];
  let runs = 0;
  const scope = uniqueName('q');
  const p = messageProcessor<Msg, unknown>(
    {
      store: createRedisStore({ client: redis, keyPrefix: prefix }),
      isFinal,
      handler: async () => {
        runs += 1;
        return 'ok';
      },
      onMessage: (r) => reports.push(r),
    },
    { defaultKey: (m) => m.id, body: () => new Uint8Array(), defaultScope: () => ['u', scope] },
  );
  return { p, reports, runs: () => runs };
}

describe('consumers-late: a policy that throws undefined (or NaN) of a success', () => {
  for (const thrown of [undefined, Number.NaN, null, 0, '']) {
    it(`thrown ${JSON.stringify(String(thrown))} (${typeof thrown}): acked processed with the error attached, kept`, async () => {
      const { p, reports, runs } = processor(throwingOfSuccess(thrown));
      const message = { id: uniqueName('k') };
      const first = await p.process(message);
      expect(first).toMatchObject({ action: 'ack', status: 'processed' });
      expect('error' in first).toBe(true);
      expect(Object.is((first as { error?: unknown }).error, thrown)).toBe(true);
      expect(reports).toHaveLength(1);
      expect('error' in (reports[0] as object)).toBe(true);
      expect(Object.is(reports[0]?.error, thrown)).toBe(true);
      // Kept: the redelivery replays, the handler never runs again.
      expect(await p.process(message)).toMatchObject({ action: 'ack', status: 'replayed' });
      expect(runs()).toBe(1);
    });
  }

  it('a clean success has no error, in the disposition or the report', async () => {
    const { p, reports } = processor(() => true);
    const first = await p.process({ id: uniqueName('k') });
    expect(first).toEqual({ action: 'ack', status: 'processed' });
    expect('error' in first).toBe(false);
    expect('error' in (reports[0] as object)).toBe(false);
  });
});
