// amqp32: a RabbitMQ consumer given `openChannel` recovers by itself from a lost connection, a
// closed channel or a cancelled consumer ('lost' then 'resumed'), and stays exactly-once across
// the reconnect: a redelivery whose ack was lost with the old connection is answered from the
// store (replayed, acked), and one whose handler still runs on the old connection is held (the
// key is held), never run a second time. On the real RabbitMQ (through a proxy of the test's
// own that cuts the connections) and Redis; every queue is the test's own.
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import type { MessageStatus } from '../src/index.js';
import { reconnectBench } from './amqp32-proxy.js';
import { amqpQueues, redisBed } from './brokers.js';
import { until } from './late-store.js';

const queues = amqpQueues();
const bed = redisBed('amqp32-reconnect');
const store = () => createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
const quick = { reconnectDelayMs: 100, reconnectMaxDelayMs: 400 };

describe('amqp32: the RabbitMQ consumer reopens its channel by itself, exactly once across it', () => {
  it('connection cut after the outcome was recorded and before its ack arrived: the redelivery is replayed, the handler ran once', {
    timeout: 30_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-lostack');
    const { proxy, opener } = bench;
    const reports: Array<{ id: string; status: MessageStatus; redelivered: boolean }> = [];
    const { consumer, runs, statuses, types } = await bench.start(store(), {
      ...quick,
      prefetch: 3,
      onMessage: ({ message, status }) => {
        reports.push({
          id: message.properties.messageId,
          status,
          redelivered: message.fields.redelivered,
        });
        // Recorded, not acked yet: what the client sends from now on is lost, then the
        // connection is cut (the broker requeues the message, its ack never came).
        if (status === 'processed' && reports.length === 1) {
          proxy.settings.dropUpstream = true;
          setTimeout(() => {
            proxy.cut();
            proxy.settings.dropUpstream = false;
          }, 100);
        }
      },
    });
    try {
      bench.publish('lost-ack');
      expect(await until(() => reports.some((r) => r.status === 'replayed'), 15_000)).toBe(true);
      expect(runs).toEqual(['lost-ack']);
      expect(reports).toEqual([
        { id: 'lost-ack', status: 'processed', redelivered: false },
        { id: 'lost-ack', status: 'replayed', redelivered: true },
      ]);
      expect(types()).toEqual(['lost', 'resumed']);
      expect(statuses[0]).toMatchObject({ type: 'lost', resubscribing: true });
      expect((statuses[0] as { error: { code: string } }).error.code).toBe('CONSUMER_LOST');
      // The same prefetch on the new channel; the consumer is still running.
      expect(opener.log.prefetches).toEqual([3, 3]);
      expect(opener.log.calls).toBe(2);
      bench.publish('after');
      expect(await until(() => runs.includes('after'), 10_000)).toBe(true);
    } finally {
      await consumer.stop(5_000);
    }
    expect(await consumer.closed).toBeUndefined();
    // stop() closed the consumer's channel: an unacked message would be ready again now.
    expect(opener.openChannels()).toEqual([]);
    expect(await bench.publisher.checkQueue(bench.queue)).toMatchObject({
      messageCount: 0,
      consumerCount: 0,
    });
    expect(runs).toEqual(['lost-ack', 'after']);
    await bench.close();
  });

  it('connection cut while the handler runs: the redelivery is held (key in progress), never run concurrently nor twice', {
    timeout: 40_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-running');
    let running = 0;
    let mostAtOnce = 0;
    let runs = 0;
    let finish: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const reports: Array<{ status: MessageStatus; redelivered: boolean }> = [];
    const { consumer, types } = await bench.start(store(), {
      ...quick,
      leaseMs: 1_500,
      handler: async () => {
        runs += 1;
        running += 1;
        mostAtOnce = Math.max(mostAtOnce, running);
        await gate;
        running -= 1;
        return 'ok';
      },
      onMessage: ({ message, status }) =>
        reports.push({ status, redelivered: message.fields.redelivered }),
    });
    try {
      bench.publish('running');
      expect(await until(() => runs === 1, 10_000)).toBe(true);
      bench.proxy.cut();
      // Reconnected; the broker redelivers the message on the new channel while the first run
      // still holds its key (heartbeats keep the lease live): held, given back, not run.
      expect(await until(() => reports.some((r) => r.status === 'in_progress'), 15_000)).toBe(true);
      expect(types()).toEqual(['lost', 'resumed']);
      expect(runs).toBe(1);
      finish();
      // The first run is recorded (its ack is lost with the old channel); the redelivery, held
      // behind that run of the same consumer, asks again once it ended (amqp32b; before, once
      // the lease it met had passed), and is answered from the store.
      expect(await until(() => reports.some((r) => r.status === 'replayed'), 15_000)).toBe(true);
      expect(runs).toBe(1);
      expect(mostAtOnce).toBe(1);
      expect(reports[0]).toEqual({ status: 'in_progress', redelivered: true });
      expect(reports.filter((r) => r.status === 'processed')).toHaveLength(1);
      expect(reports.at(-1)).toEqual({ status: 'replayed', redelivered: true });
    } finally {
      finish();
      await consumer.stop(5_000);
    }
    expect(bench.opener.openChannels()).toEqual([]);
    expect(await bench.publisher.checkQueue(bench.queue)).toMatchObject({
      messageCount: 0,
      consumerCount: 0,
    });
    expect(runs).toBe(1);
    await bench.close();
  });

  it('the queue deleted (basic.cancel): the old channel is closed, a consume of the missing queue does not crash, and it resumes once the queue exists', {
    timeout: 30_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-cancel');
    const { publisher, queue, opener } = bench;
    const { consumer, runs, statuses } = await bench.start(store(), {
      reconnectDelayMs: 100,
      reconnectMaxDelayMs: 300,
    });
    try {
      await publisher.deleteQueue(queue);
      expect(await until(() => statuses.length === 1, 5_000)).toBe(true);
      expect(statuses[0]).toMatchObject({ type: 'lost', resubscribing: true });
      // The consumer declares nothing: its consumes of the missing queue fail (404, the
      // channel closed by the broker; its 'error' heard), and it tries again.
      expect(await until(() => opener.log.calls >= 3, 10_000)).toBe(true);
      expect(statuses).toHaveLength(1);
      // The cancelled channel (the consumer's own, still open after basic.cancel) was closed.
      expect(opener.log.closed.has(opener.log.channels[0] as never)).toBe(true);
      await publisher.assertQueue(queue, { durable: false });
      expect(await until(() => statuses.length === 2, 10_000)).toBe(true);
      expect(statuses[1]).toEqual({ type: 'resumed' });
      bench.publish('again');
      expect(await until(() => runs.length === 1, 10_000)).toBe(true);
      expect(opener.openChannels()).toHaveLength(1);
    } finally {
      await consumer.stop(5_000);
    }
    expect(opener.openChannels()).toEqual([]);
    expect(runs).toEqual(['again']);
    await bench.close();
  });

  it('40 messages, prefetch 5, the connection cut 4 times mid-flight: every handler ran exactly once, every message acked', {
    timeout: 60_000,
  }, async () => {
    const bench = await reconnectBench(queues, 'amqp32-chaos');
    const counts = new Map<string, number>();
    const { consumer, types } = await bench.start(store(), {
      ...quick,
      prefetch: 5,
      // Every run is short (40 ms) and ends here, so the lease is never what lets a copy run:
      // a held redelivery waits for the local run. At 1 s, a loaded machine's stall of the
      // event loop past it let the store hand a running key to a redelivery (a second run).
      leaseMs: 10_000,
      retryDelayMs: 100,
      handler: async (message) => {
        const id = message.properties.messageId;
        counts.set(id, (counts.get(id) ?? 0) + 1);
        await new Promise((resolve) => setTimeout(resolve, 40));
        return id;
      },
    });
    try {
      for (let n = 0; n < 40; n++) bench.publish(`m${n}`);
      for (let cut = 0; cut < 4; cut++) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        bench.proxy.cut();
        expect(await until(() => types().length === 2 * (cut + 1), 10_000)).toBe(true);
      }
      expect(await until(() => counts.size === 40, 30_000)).toBe(true);
      // Settled: nothing in flight and nothing ready, twice in a row (a message given back
      // after its hold is ready for a moment before it is redelivered).
      let quiet = 0;
      for (let poll = 0; poll < 100 && quiet < 2; poll++) {
        await new Promise((resolve) => setTimeout(resolve, 300));
        const { messageCount } = await bench.publisher.checkQueue(bench.queue);
        quiet = consumer.inFlight === 0 && messageCount === 0 ? quiet + 1 : 0;
      }
      expect(quiet).toBe(2);
    } finally {
      await consumer.stop(10_000);
    }
    expect([...counts.values()].every((c) => c === 1)).toBe(true);
    expect(counts.size).toBe(40);
    expect(await bench.publisher.checkQueue(bench.queue)).toMatchObject({
      messageCount: 0,
      consumerCount: 0,
    });
    expect(bench.opener.openChannels()).toEqual([]);
    await bench.close();
  });
});
