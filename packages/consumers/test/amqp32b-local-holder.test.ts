// amqp32b: after a reconnect, the redeliveries of messages whose handlers still ran on the lost
// channel were held (in progress) for the holder's whole lease (30 s by default) even when that
// run ended sooner; with `prefetch` of them in flight the new channel's slots were all taken and
// nothing new was processed meanwhile. Now a duplicate held while a run of the same consumer
// holds its key asks the store again once that run ends: acked as a replay, on the same delivery
// (not given back and redelivered after the lease). Never a second run. On the real RabbitMQ
// (through the test's proxy that cuts the connection) and Redis, with the default 30 s lease.
// consumers33: onMessage hears one report per delivery (the held redelivery: `replayed` only,
// not `in_progress` and then `replayed`); the holds are seen through the engine's `conflict`.
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import type { MessageStatus } from '../src/index.js';
import { reconnectBench } from './amqp32-proxy.js';
import { amqpQueues, redisBed } from './brokers.js';
import { until } from './late-store.js';

const queues = amqpQueues();
const bed = redisBed('amqp32b-local');
const store = () => createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });

it('redeliveries held behind local runs are replayed once those end, on the same delivery; the slots free again', {
  timeout: 40_000,
}, async () => {
  const bench = await reconnectBench(queues, 'amqp32b-local');
  const runs = new Map<string, number>();
  let running = 0;
  let mostAtOnce = 0;
  let finish: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const reports: Array<{ id: string; status: MessageStatus; tag: number; channel: number }> = [];
  let conflicts = 0;
  const { consumer, types } = await bench.start(store(), {
    onEvent: (event: { type: string }) => {
      if (event.type === 'conflict') conflicts += 1;
    },
    reconnectDelayMs: 100,
    reconnectMaxDelayMs: 400,
    prefetch: 2,
    // leaseMs: the default 30 s, longer than this test waits for the replays.
    handler: async (message) => {
      const id = message.properties.messageId;
      runs.set(id, (runs.get(id) ?? 0) + 1);
      running += 1;
      mostAtOnce = Math.max(mostAtOnce, running);
      if (id !== 'after') await gate;
      running -= 1;
      return 'ok';
    },
    onMessage: ({ message, status }) =>
      reports.push({
        id: message.properties.messageId,
        status,
        tag: message.fields.deliveryTag,
        channel: bench.opener.log.channels.length,
      }),
  });
  try {
    bench.publish('a');
    bench.publish('b');
    expect(await until(() => running === 2, 10_000)).toBe(true);
    bench.proxy.cut();
    // Both redelivered on the new channel while their first runs hold the keys: held.
    expect(await until(() => conflicts === 2, 15_000)).toBe(true);
    // Held: not told yet (told once, when the delivery's fate is known).
    expect(reports.filter((r) => r.status === 'in_progress')).toEqual([]);
    expect(types()).toEqual(['lost', 'resumed']);
    // Both slots of the new channel are taken: 'after' waits.
    bench.publish('after');
    finish();
    // The first runs are recorded (their acks lost with the old channel): each held
    // redelivery asks again at once and is acked as a replay, on the delivery it was held on.
    // Bounded by the test (15 s), below the 30 s lease the old code waited out.
    expect(
      await until(() => reports.filter((r) => r.status === 'replayed').length === 2, 15_000),
    ).toBe(true);
    for (const id of ['a', 'b']) {
      const replayed = reports.find((r) => r.id === id && r.status === 'replayed');
      // On the new channel (the second opened).
      expect(replayed?.channel).toBe(2);
      // The first run recorded, then the replay of the held redelivery: one report each, so
      // the redelivery was not given back and delivered again (that would be told too).
      expect(reports.filter((r) => r.id === id).map((r) => r.status)).toEqual([
        'processed',
        'replayed',
      ]);
    }
    expect(conflicts).toBe(2);
    expect(await until(() => runs.get('after') === 1, 10_000)).toBe(true);
  } finally {
    finish();
    await consumer.stop(5_000);
  }
  expect(Object.fromEntries(runs)).toEqual({ a: 1, b: 1, after: 1 });
  expect(mostAtOnce).toBe(2);
  expect(await bench.publisher.checkQueue(bench.queue)).toMatchObject({
    messageCount: 0,
    consumerCount: 0,
  });
  await bench.close();
});

it('a local run that fails: its held redelivery goes back after retryDelayMs, not the lease, and runs once more (after it)', {
  timeout: 40_000,
}, async () => {
  const bench = await reconnectBench(queues, 'amqp32b-local-failed');
  let runs = 0;
  let running = 0;
  let mostAtOnce = 0;
  let finish: () => void = () => {};
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const reports: Array<{ status: MessageStatus; tag: number }> = [];
  let conflicts = 0;
  const { consumer } = await bench.start(store(), {
    onEvent: (event: { type: string }) => {
      if (event.type === 'conflict') conflicts += 1;
    },
    reconnectDelayMs: 100,
    reconnectMaxDelayMs: 400,
    retryDelayMs: 200,
    handler: async () => {
      runs += 1;
      running += 1;
      mostAtOnce = Math.max(mostAtOnce, running);
      try {
        if (runs === 1) {
          await gate;
          throw new Error('first run fails');
        }
        return 'ok';
      } finally {
        running -= 1;
      }
    },
    onMessage: ({ message, status }) => reports.push({ status, tag: message.fields.deliveryTag }),
  });
  try {
    bench.publish('x');
    expect(await until(() => runs === 1, 10_000)).toBe(true);
    bench.proxy.cut();
    expect(await until(() => conflicts === 1, 15_000)).toBe(true);
    finish();
    // Bounded by the test (15 s), below the 30 s lease the old code waited out.
    expect(await until(() => reports.some((r) => r.status === 'processed'), 15_000)).toBe(true);
    // The first run failed; its held redelivery, told `in_progress` once given back; the next
    // delivery ran (the first two in either order: they end in one turn).
    expect(reports.map((r) => r.status).sort()).toEqual(['failed', 'in_progress', 'processed']);
    expect(reports[2]?.status).toBe('processed');
    // Given back, then redelivered: the second run is on another delivery.
    const held = reports.find((r) => r.status === 'in_progress');
    expect(reports[2]?.tag).not.toBe(held?.tag);
  } finally {
    finish();
    await consumer.stop(5_000);
  }
  expect(runs).toBe(2);
  expect(mostAtOnce).toBe(1);
  expect(await bench.publisher.checkQueue(bench.queue)).toMatchObject({
    messageCount: 0,
    consumerCount: 0,
  });
  await bench.close();
});
