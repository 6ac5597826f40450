// consumers33: on JetStream, a duplicate of a message whose first delivery's handler still ran
// in this consumer (a redelivery at ack_wait, its working() lost; a publisher's resend) was
// nak'ed with the in-progress delay (the holder's lease) at once: it came back only then, a
// delivery spent, however soon the local run ended. RabbitMQ already asked the store again when
// the local run ended; JetStream now does too: the duplicate is held (working() sent, no slot
// of `concurrency` taken) and acked as a replay on the delivery it came on. At most
// `concurrency` such holds at once: one more is nak'ed with its delay as before. onMessage hears
// one report per delivery. On the real NATS JetStream and Redis.
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageStatus } from '../src/index.js';
import { durableStream, jetStreamBed } from './brokers.js';
import { until } from './late-store.js';

describe('consumers33: JetStream duplicates of a local run', () => {
  const bed = jetStreamBed('consumers33-js-local');
  /** The consumer's info once its last ack reached the server (each report comes before its ack). */
  async function settledInfo(stream: string) {
    const jsm = await bed.nc.jetstreamManager();
    let info = await jsm.consumers.info(stream, 'w');
    for (let i = 0; i < 50 && info.num_ack_pending > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      info = await jsm.consumers.info(stream, 'w');
    }
    return info;
  }

  it('a redelivery while the first delivery still runs here is acked as a replay once that run is recorded, on its own delivery', {
    timeout: 40_000,
  }, async () => {
    const stream = await durableStream(bed.nc, 'C33_JS_LOCAL', bed.streams, {
      ackWaitMs: 1_000,
      count: 1,
    });
    let runs = 0;
    let conflicts = 0;
    let finish: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const reports: Array<{ status: MessageStatus; delivery: number }> = [];
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}a:` }),
      consumer: await bed.nc.jetstream().consumers.get(stream, 'w'),
      concurrency: 2,
      workingIntervalMs: 250,
      // The in-progress delay the old code nak'ed the duplicate with (about a lease).
      leaseMs: 5_000,
      handler: async (message: JsMsg) => {
        runs += 1;
        // The first delivery's working() is lost: JetStream redelivers it at ack_wait.
        message.working = () => {};
        await gate;
        return 'done';
      },
      onEvent: (event) => {
        if (event.type === 'conflict') conflicts += 1;
      },
      onMessage: ({ message, status }) =>
        reports.push({ status, delivery: message.info.redeliveryCount }),
    });
    try {
      // The redelivery met the key held by the local run.
      expect(await until(() => conflicts === 1, 10_000)).toBe(true);
      finish();
      expect(await until(() => reports.length === 2, 15_000)).toBe(true);
      // One report per delivery; the redelivery (delivery 2) replayed on itself, not nak'ed
      // and sent a third time (the old code: in_progress at delivery 2, replayed at 3).
      expect(reports).toEqual([
        { status: 'processed', delivery: 1 },
        { status: 'replayed', delivery: 2 },
      ]);
      const info = await settledInfo(stream);
      expect([info.num_ack_pending, info.num_pending, info.delivered.consumer_seq]).toEqual([
        0, 0, 2,
      ]);
    } finally {
      finish();
      await consumer.stop(5_000);
    }
    expect(runs).toBe(1);
  });

  it('at most `concurrency` duplicates are held for local runs: one more is nak’ed with its delay, as before', {
    timeout: 40_000,
  }, async () => {
    const { js, jsm, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    // Four messages with one key and body: the first runs, three are its publisher's resends
    // (published once it runs).
    await js.publish(`${name}.orders`, 'same');
    let runs = 0;
    let conflicts = 0;
    let finish: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const reports: Array<{ seq: number; status: MessageStatus; delivery: number }> = [];
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}b:` }),
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      key: () => 'same',
      concurrency: 2,
      leaseMs: 3_000,
      handler: async () => {
        runs += 1;
        await gate;
        return 'done';
      },
      onEvent: (event) => {
        if (event.type === 'conflict') conflicts += 1;
      },
      onMessage: ({ message, status }) =>
        reports.push({
          seq: message.info.streamSequence,
          status,
          delivery: message.info.redeliveryCount,
        }),
    });
    try {
      expect(await until(() => runs === 1, 10_000)).toBe(true);
      for (let n = 0; n < 3; n++) await js.publish(`${name}.orders`, 'same');
      // The first run holds one slot; two resends are held (no slot taken), the third is given
      // back with the in-progress delay.
      expect(await until(() => conflicts === 3, 10_000)).toBe(true);
      expect(await until(() => reports.length === 1, 5_000)).toBe(true);
      expect([...reports]).toEqual([{ seq: 4, status: 'in_progress', delivery: 1 }]);
      finish();
      expect(await until(() => reports.length === 5, 20_000)).toBe(true);
      const bySeq = (seq: number) =>
        reports.filter((r) => r.seq === seq).map(({ status, delivery }) => [status, delivery]);
      expect(bySeq(1)).toEqual([['processed', 1]]);
      expect(bySeq(2)).toEqual([['replayed', 1]]);
      expect(bySeq(3)).toEqual([['replayed', 1]]);
      expect(bySeq(4)).toEqual([
        ['in_progress', 1],
        ['replayed', 2],
      ]);
      const info = await settledInfo(name);
      expect([info.num_ack_pending, info.num_pending]).toEqual([0, 0]);
    } finally {
      finish();
      await consumer.stop(5_000);
    }
    expect(runs).toBe(1);
  });
});
