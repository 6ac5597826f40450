import { deriveKey, deriveStorageKey, type JsonValue } from '@idem/core';
import type { Context, KinesisStreamRecord } from 'aws-lambda';
import { describe, expect, it } from 'vitest';
import {
  functionScope,
  idempotency,
  makeIdempotent,
  makeKinesisBatchHandler,
} from '../src/index.js';
import { requestFor, toKey } from '../src/lambda-engine.js';
import { fakeContext, kinesisRecord, useEnv } from './lambda-env.js';
import { middies } from './middy-versions.js';

interface JobEvent {
  runAt?: string;
  tenant?: string;
  note: string;
}

/** A value object that writes itself as its id, or null without one (as many do). */
class TenantId {
  constructor(readonly id: string | undefined) {}
  toJSON() {
    return this.id ?? null;
  }
}

/** Runs `handler` on each event in turn: its answer, or the code of what it threw. */
async function outcomes(
  handler: (event: JobEvent, context: Context) => Promise<unknown>,
  events: JobEvent[],
): Promise<unknown[]> {
  const seen: unknown[] = [];
  for (const event of events)
    seen.push(
      await handler(event, fakeContext(10_000)).catch((error: { code?: string }) => error.code),
    );
  return seen;
}

const answering = (ran: string[]) => async (event: JobEvent) => {
  ran.push(event.note);
  return `answer for ${event.note}`;
};

/** A key and a scope whose canonical JSON is the same for every event without the field. */
const fieldless = [
  [
    'key ({ runAt: new Date(e.runAt) })',
    { key: (e: JobEvent) => ({ runAt: new Date(e.runAt as string) as unknown as string }) },
  ],
  [
    'scope ({ tenant: new TenantId(e.tenant) })',
    {
      key: () => 'order-42',
      scope: (e: JobEvent) => ({ tenant: new TenantId(e.tenant) as unknown as string }),
    },
  ],
] as const;

describe('rev30b: the check reads what is hashed, not the value before canonical JSON', () => {
  const env = useEnv('redis');

  // FINDING (MEDIUM, isolation; fixed): canonical JSON writes a Date as its toJSON(), and an
  // invalid Date (`new Date(undefined)`, a missing field) writes `null`: `{ runAt: null }`, one
  // key for every event without a runAt. break30's check looked at the Date object (not a plain
  // object: "names something") and let it through: the second such event got the first one's
  // answer. The same for any value object whose toJSON gives null or ''.
  it.each(fieldless)('%s without the field: refused, nothing run or shared', async (_, options) => {
    const ran: string[] = [];
    const handler = makeIdempotent(answering(ran), {
      scope: functionScope,
      store: env().store,
      ...options,
    });
    const refused = await outcomes(handler, [{ note: 'alice' }, { note: 'bob' }]);
    expect({ refused, ran }).toEqual({ refused: ['INVALID_INPUT', 'INVALID_INPUT'], ran: [] });
    // With the field: run once, then replayed.
    const full = { runAt: '2026-12-07T10:00:00Z', tenant: 'acme', note: 'carol' };
    const answers = await outcomes(handler, [full, full]);
    expect({ answers, ran }).toEqual({
      answers: Array(2).fill('answer for carol'),
      ran: ['carol'],
    });
  });

  it.each(middies)('Middy $major: both refused before the handler', async ({ middy }) => {
    const ran: string[] = [];
    for (const [, options] of fieldless) {
      const handler = middy(answering(ran)).use(
        idempotency({ scope: functionScope, store: env().store, ...options }),
      );
      const refused = await outcomes(handler as Parameters<typeof outcomes>[0], [
        { note: 'alice' },
        { note: 'bob' },
      ]);
      expect(refused).toEqual(['INVALID_INPUT', 'INVALID_INPUT']);
    }
    expect(ran).toEqual([]);
  });

  it('Kinesis: such a record is rejected, not run and not replayed', async () => {
    const statuses: string[] = [];
    const ran: string[] = [];
    const handler = makeKinesisBatchHandler(
      async (record: KinesisStreamRecord) => {
        ran.push(record.kinesis.sequenceNumber);
      },
      {
        store: env().store,
        // A field the records do not have.
        key: (record) => ({ at: new Date((record as { at?: string }).at as string) as never }),
        onRecord: (report) => statuses.push(report.status),
      },
    );
    expect(
      await handler({ Records: [kinesisRecord('a'), kinesisRecord('b')] }, fakeContext(10_000)),
    ).toEqual({ batchItemFailures: [] });
    expect(statuses).toEqual(['rejected', 'rejected']);
    expect(ran).toEqual([]);
  });

  // The other values the check saw otherwise than canonical JSON writes them.
  const arrayWithName = Object.assign([''], { label: 'orders' });
  let nested: JsonValue = {};
  for (let level = 0; level < 40; level += 1) nested = { a: nested };
  let reads = 0;
  const changing = {
    // undefined when hashed, 'x' when checked after (a proxy, a lazy model...).
    get id() {
      reads += 1;
      return reads === 1 ? undefined : 'x';
    },
  };
  it.each([
    ['an array whose only element is \'\' beside a named property (written [""])', arrayWithName],
    ['{} nested 40 levels deep (the check stopped at 32)', nested],
    ['a getter read twice, undefined the first time', changing],
    ["a toJSON() giving ''", { toJSON: () => '' }],
  ])('key: %s is refused', (_, value) => {
    expect(() => toKey(value as JsonValue)).toThrow(
      expect.objectContaining({ code: 'INVALID_INPUT' }),
    );
  });

  // Exactly-once: for every value the check lets through, the key and storage key are those
  // the old code derived (a key that moved at the upgrade would run a recorded event again).
  it.each<[string, unknown]>([
    ['an object', { orderId: 'o-1', line: 3, gift: false, note: null, tags: ['a', ''] }],
    ['numbers', [0, -0, 1e21, 5e-324, -1.5, 2 ** 53 + 2]],
    ['unicode and a lone surrogate', { name: 'Zoë \u{1f600} \ud800', 'k\u00e9y': '\u2028' }],
    ['a __proto__ member', JSON.parse('{"__proto__":"x","b":{"__proto__":[1]}}')],
    ['a valid Date', { at: new Date(0) }],
    ['a long string', 'x'.repeat(300)],
    ['undefined beside a value', { orderId: 'o-1', coupon: undefined }],
  ])('%s keeps its key and storage key', (_, value) => {
    expect(toKey(value as JsonValue)).toBe(deriveKey(value as JsonValue));
    const context = fakeContext(10_000);
    const { scope } = requestFor({}, context, 'k', undefined, () => value as JsonValue);
    expect(deriveStorageKey(scope ?? null, 'k')).toBe(deriveStorageKey(value as JsonValue, 'k'));
  });
});
