import { setTimeout as sleep } from 'node:timers/promises';
import {
  createIdempotency,
  deriveStorageKey,
  fingerprint,
  type IdempotencyStore,
  InvalidInputError,
  type StoredRecord,
  StoreUnavailableError,
} from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import {
  consumeJetStream,
  type JetStreamConsumerOptions,
  type JsMsgLike,
  type MessageReport,
} from '../src/index.js';
import { LEGACY_CLOCK_SLACK_MS, legacyRecordBelongs } from '../src/message-outcome.js';
import { jetStreamLegacyKey } from '../src/nats-consumer.js';
import { uniqueName } from './brokers.js';

// The JetStream key upgrade bridge (`legacyKeyLookup`): a redelivery of a message that an
// instance of the earlier version recorded under `stream:streamSequence` is decided by that
// record, and only by a record that is this message's own. Fake consumers over a real Redis
// store (its clock is the server's: message times are set relative to now).

interface Fake {
  message: JsMsgLike;
  dispositions: string[];
}

const fakeMessage = (options: {
  stream: string;
  seq: number;
  body: string;
  deliveries: number;
  storedAtMs: number;
  msgId?: string;
}): Fake => {
  const dispositions: string[] = [];
  return {
    dispositions,
    message: {
      data: new TextEncoder().encode(options.body),
      seq: options.seq,
      info: {
        stream: options.stream,
        consumer: 'w',
        streamSequence: options.seq,
        redeliveryCount: options.deliveries,
        timestampNanos: options.storedAtMs * 1e6,
      },
      headers:
        options.msgId === undefined
          ? undefined
          : { get: (name: string) => (name === 'Nats-Msg-Id' ? (options.msgId ?? '') : '') },
      ack: () => dispositions.push('ack'),
      nak: () => dispositions.push('nak'),
      term: () => dispositions.push('term'),
      working: () => {},
    },
  };
};

/** A store that counts (and may stall) its `get` calls. */
const counting = (inner: IdempotencyStore, stallGet = false) => {
  const counts = { get: 0 };
  const store: IdempotencyStore = {
    capabilities: inner.capabilities,
    acquire: (input) => inner.acquire(input),
    complete: (input) => inner.complete(input),
    release: (input) => inner.release(input),
    extend: (input) => inner.extend(input),
    get: (key) => {
      counts.get += 1;
      return stallGet ? new Promise<never>(() => {}) : inner.get(key);
    },
  };
  return { store, counts };
};

describe('JetStream legacy key bridge', () => {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  const prefix = `${uniqueName('idem-jskey')}:`;
  const store = createRedisStore({ client: redis, keyPrefix: prefix });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  });

  const legacyKeyOf = (m: JsMsgLike) => `${m.info.stream}:${m.info.streamSequence}`;

  /** Runs consumeJetStream over the messages (a fake pull consumer); the reports and handler runs. */
  async function consume(
    fakes: Fake[],
    options: Partial<JetStreamConsumerOptions<JsMsgLike, unknown>> = {},
  ) {
    const reports: MessageReport<JsMsgLike>[] = [];
    const runs: { fence: number; storageKey: string }[] = [];
    const consumer = await consumeJetStream<JsMsgLike, unknown>({
      store,
      retryDelayMs: 10,
      handler: async (_message, ctx) => {
        runs.push({ fence: ctx.fence, storageKey: ctx.storageKey });
        return 'done';
      },
      onMessage: (report) => reports.push(report),
      ...options,
      consumer: {
        consume: async () => ({
          async *[Symbol.asyncIterator]() {
            for (const fake of fakes) yield fake.message;
          },
          stop() {},
        }),
      },
    });
    await consumer.stop(10_000);
    return { reports, runs };
  }

  /** What an instance of the earlier version did: the same consumer, keyed `stream:seq`. */
  const oldInstance = (
    fakes: Fake[],
    options: Partial<JetStreamConsumerOptions<JsMsgLike, unknown>> = {},
  ) => consume(fakes, { key: legacyKeyOf, ...options });

  const stream = () => uniqueName('S').replace(/-/g, '_');

  it('legacyRecordBelongs: only a live record of the same fingerprint, not older than the message', () => {
    const retentionMs = 60_000;
    const storedAtMs = 1_000_000;
    const record = (r: Partial<StoredRecord>): StoredRecord => ({
      status: 'completed',
      fingerprint: 'f',
      owner: 'o',
      fence: 1,
      leaseUntil: storedAtMs + 30_000,
      expiresAt: storedAtMs + 5 + retentionMs,
      ...r,
    });
    const belongs = (r: StoredRecord | undefined, fp = 'f') =>
      legacyRecordBelongs(r, fp, storedAtMs, retentionMs);
    expect(belongs(undefined)).toBe(false);
    expect(belongs(record({}))).toBe(true);
    expect(belongs(record({}), 'g')).toBe(false); // another body: another message
    expect(belongs(record({ status: 'released' }))).toBe(false); // nothing recorded
    // completed: its completion (expiresAt - retentionMs) against the message's storage time
    const completedAt = (t: number) => record({ expiresAt: t + retentionMs });
    expect(belongs(completedAt(storedAtMs - LEGACY_CLOCK_SLACK_MS))).toBe(true);
    expect(belongs(completedAt(storedAtMs - LEGACY_CLOCK_SLACK_MS - 1))).toBe(false);
    expect(belongs(completedAt(storedAtMs - 3_600_000))).toBe(false); // a recreated stream's
    expect(belongs(record({ expiresAt: Number.NaN }))).toBe(false);
    // in progress: its lease deadline (at least acquisition + leaseMs)
    expect(belongs(record({ status: 'in_progress', leaseUntil: storedAtMs + 1 }))).toBe(true);
    expect(
      belongs(record({ status: 'in_progress', leaseUntil: storedAtMs - LEGACY_CLOCK_SLACK_MS })),
    ).toBe(true);
    expect(
      belongs(
        record({ status: 'in_progress', leaseUntil: storedAtMs - LEGACY_CLOCK_SLACK_MS - 1 }),
      ),
    ).toBe(false);
    expect(belongs(record({ status: 'in_progress', leaseUntil: Number.NaN }))).toBe(false);
  });

  it('jetStreamLegacyKey: only for a redelivery without Nats-Msg-Id that has timestampNanos', () => {
    const at = Date.UTC(2026, 0, 1);
    const m = (deliveries: number, msgId?: string) =>
      fakeMessage({ stream: 'S', seq: 7, body: '', deliveries, storedAtMs: at, msgId }).message;
    expect(jetStreamLegacyKey(m(2))).toEqual({ key: 'S:7', storedAtMs: at });
    expect(jetStreamLegacyKey(m(9))).toEqual({ key: 'S:7', storedAtMs: at });
    expect(jetStreamLegacyKey(m(1))).toBeUndefined(); // a first delivery: no instance saw it
    expect(jetStreamLegacyKey(m(2, 'id-1'))).toBeUndefined(); // its key never changed
    const old = m(2);
    old.info.timestampNanos = undefined; // its default key is still `stream:seq`
    expect(jetStreamLegacyKey(old)).toBeUndefined();
  });

  it('an outcome an old instance recorded under stream:seq answers the redelivery: acked, not run again', async () => {
    const s = stream();
    const at = Date.now() - 5_000;
    const first = fakeMessage({
      stream: s,
      seq: 7,
      body: 'order-7',
      deliveries: 1,
      storedAtMs: at,
    });
    const before = await oldInstance([first]);
    expect(before.runs).toHaveLength(1); // recorded; its ack is lost
    const again = fakeMessage({
      stream: s,
      seq: 7,
      body: 'order-7',
      deliveries: 2,
      storedAtMs: at,
    });
    const { store: spy, counts } = counting(store);
    const after = await consume([again], { store: spy });
    expect(after.runs).toHaveLength(0);
    expect(again.dispositions).toEqual(['ack']);
    expect(after.reports.map((r) => [r.status, r.legacyKey])).toEqual([['replayed', true]]);
    expect(counts.get).toBe(1); // the bridge's cost: one read per redelivery
    // and a delivery after that (its ack lost again) is still a replay
    const third = fakeMessage({
      stream: s,
      seq: 7,
      body: 'order-7',
      deliveries: 3,
      storedAtMs: at,
    });
    expect((await consume([third])).reports.map((r) => r.status)).toEqual(['replayed']);
  });

  it('a first delivery is not looked up (no store read); a message with Nats-Msg-Id neither', async () => {
    const s = stream();
    const at = Date.now() - 5_000;
    const { store: spy, counts } = counting(store);
    const first = fakeMessage({ stream: s, seq: 1, body: 'a', deliveries: 1, storedAtMs: at });
    const withId = fakeMessage({
      stream: s,
      seq: 2,
      body: 'b',
      deliveries: 4,
      storedAtMs: at,
      msgId: 'pub-2',
    });
    const { reports } = await consume([first, withId], { store: spy });
    expect(reports.map((r) => r.status)).toEqual(['processed', 'processed']);
    expect(counts.get).toBe(0);
  });

  it('an old instance still running the message: the redelivery is given back, then replayed once it is recorded', async () => {
    const s = stream();
    const at = Date.now() - 5_000;
    let finish: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    let entered: () => void = () => {};
    const running = new Promise<void>((resolve) => {
      entered = resolve;
    });
    const first = fakeMessage({ stream: s, seq: 3, body: 'x', deliveries: 1, storedAtMs: at });
    const old = oldInstance([first], {
      handler: async () => {
        entered();
        await gate;
        return 'old';
      },
    });
    await running;
    const again = fakeMessage({ stream: s, seq: 3, body: 'x', deliveries: 2, storedAtMs: at });
    const during = await consume([again]);
    expect(during.runs).toHaveLength(0);
    expect(again.dispositions).toEqual(['nak']);
    expect(during.reports.map((r) => [r.status, r.legacyKey])).toEqual([['in_progress', true]]);
    finish();
    await old;
    const later = fakeMessage({ stream: s, seq: 3, body: 'x', deliveries: 3, storedAtMs: at });
    const after = await consume([later]);
    expect(after.runs).toHaveLength(0);
    expect(after.reports.map((r) => [r.status, r.legacyKey])).toEqual([['replayed', true]]);
  });

  it('an old instance that crashed mid-handler: taken over under the old key with a higher fence, run once', async () => {
    const s = stream();
    const at = Date.now() - 5_000;
    const scope = ['nats', s, 'w'];
    const crashed = createIdempotency({ store, leaseMs: 200, heartbeatMs: false });
    const begun = await crashed.begin({
      key: `${s}:4`,
      scope,
      fingerprint: fingerprint({ body: new TextEncoder().encode('y') }),
    });
    expect(begun.kind).toBe('acquired');
    if (begun.kind === 'acquired') begun.execution.abandon(); // killed: its lease runs out
    await sleep(300);
    const again = fakeMessage({ stream: s, seq: 4, body: 'y', deliveries: 2, storedAtMs: at });
    const after = await consume([again]);
    expect(after.runs).toEqual([{ fence: 2, storageKey: deriveStorageKey(scope, `${s}:4`) }]);
    expect(after.reports.map((r) => [r.status, r.legacyKey])).toEqual([['processed', true]]);
    const third = fakeMessage({ stream: s, seq: 4, body: 'y', deliveries: 3, storedAtMs: at });
    const replay = await consume([third]);
    expect(replay.runs).toHaveLength(0);
    expect(replay.reports.map((r) => r.status)).toEqual(['replayed']);
  });

  it('a record older than the message (a recreated stream reused the sequence) does not answer for it', async () => {
    const s = stream();
    const old = fakeMessage({
      stream: s,
      seq: 1,
      body: 'same',
      deliveries: 1,
      storedAtMs: Date.now() - 60_000,
    });
    await oldInstance([old]);
    // The recreated stream's message 1: the same body, stored after the old record was made.
    const storedAtMs = Date.now() + LEGACY_CLOCK_SLACK_MS + 5_000;
    const again = fakeMessage({ stream: s, seq: 1, body: 'same', deliveries: 2, storedAtMs });
    const after = await consume([again]);
    expect(after.runs).toHaveLength(1);
    expect(after.reports.map((r) => [r.status, r.legacyKey])).toEqual([['processed', undefined]]);
    expect(again.dispositions).toEqual(['ack']);
  });

  it('a record of another body under the old key is another message: run, not rejected as a mismatch', async () => {
    const s = stream();
    const at = Date.now() - 5_000;
    await oldInstance([
      fakeMessage({ stream: s, seq: 2, body: 'old body', deliveries: 1, storedAtMs: at }),
    ]);
    const again = fakeMessage({
      stream: s,
      seq: 2,
      body: 'new body',
      deliveries: 2,
      storedAtMs: at,
    });
    const after = await consume([again]);
    expect(after.runs).toHaveLength(1);
    expect(after.reports.map((r) => r.status)).toEqual(['processed']);
    expect(again.dispositions).toEqual(['ack']);
  });

  it('a released record under the old key (the old handler threw): run under the new key', async () => {
    const s = stream();
    const at = Date.now() - 5_000;
    const old = await oldInstance(
      [fakeMessage({ stream: s, seq: 5, body: 'z', deliveries: 1, storedAtMs: at })],
      {
        handler: async () => {
          throw new Error('transient');
        },
      },
    );
    expect(old.reports.map((r) => r.status)).toEqual(['failed']);
    const again = fakeMessage({ stream: s, seq: 5, body: 'z', deliveries: 2, storedAtMs: at });
    const after = await consume([again]);
    expect(after.runs).toHaveLength(1);
    expect(after.runs[0]?.storageKey).toBe(
      deriveStorageKey(['nats', s, 'w'], `${s}:5:${at * 1e6}`),
    );
    expect(after.reports.map((r) => [r.status, r.legacyKey])).toEqual([['processed', undefined]]);
  });

  it('legacyKeyLookup: false, or a key function of its own: no lookup (the message runs again)', async () => {
    const s = stream();
    const at = Date.now() - 5_000;
    await oldInstance([
      fakeMessage({ stream: s, seq: 6, body: 'w', deliveries: 1, storedAtMs: at }),
    ]);
    const { store: spy, counts } = counting(store);
    const off = await consume(
      [fakeMessage({ stream: s, seq: 6, body: 'w', deliveries: 2, storedAtMs: at })],
      { store: spy, legacyKeyLookup: false },
    );
    expect(off.reports.map((r) => r.status)).toEqual(['processed']); // the documented cost of turning it off
    const own = await consume(
      [fakeMessage({ stream: s, seq: 6, body: 'w', deliveries: 3, storedAtMs: at })],
      { store: spy, key: (m) => `own:${m.info.streamSequence}` },
    );
    expect(own.reports.map((r) => r.status)).toEqual(['processed']);
    expect(counts.get).toBe(0);
  });

  it('a store read that hangs is time-limited (storeTimeoutMs): the message is given back, not run', async () => {
    const s = stream();
    const at = Date.now() - 5_000;
    const { store: stalled, counts } = counting(store, true);
    const again = fakeMessage({ stream: s, seq: 8, body: 'v', deliveries: 2, storedAtMs: at });
    const started = performance.now();
    const after = await consume([again], { store: stalled, storeTimeoutMs: 150 });
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(counts.get).toBe(1);
    expect(after.runs).toHaveLength(0);
    expect(again.dispositions).toEqual(['nak']);
    expect(after.reports.map((r) => r.status)).toEqual(['failed']);
    expect(after.reports[0]?.error).toBeInstanceOf(StoreUnavailableError);
  });

  it('options: a store without get, or a legacyKeyLookup that is not a boolean, is a typed error', async () => {
    const { get: _get, ...withoutGet } = store;
    const consumer = { consume: async () => ({ async *[Symbol.asyncIterator]() {}, stop() {} }) };
    await expect(
      consumeJetStream({ consumer, store: withoutGet as never, handler: async () => 1 }),
    ).rejects.toThrow(InvalidInputError);
    const ok = await consumeJetStream({
      consumer,
      store: withoutGet as never,
      legacyKeyLookup: false,
      handler: async () => 1,
    });
    await ok.stop();
    await expect(
      consumeJetStream({
        consumer,
        store,
        legacyKeyLookup: 'yes' as never,
        handler: async () => 1,
      }),
    ).rejects.toThrow(InvalidInputError);
  });
});
