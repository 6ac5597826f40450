// consumers-late: on the real brokers (RabbitMQ, NATS JetStream; Redis store underneath), an
// acquisition the store answers late never starts the handler once the message was given
// back (its maxHoldMs passed) or the consumer's stop() resolved, and stop() waits (bounded)
// for the acquisitions of messages already given back: before the fix the handler ran after
// stop() had resolved, for a message the broker was already redelivering.
import type { IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import type { IdempotentConsumer, MessageReport } from '../src/index.js';
import { amqpQueues, type Bench, jetStreamBed, jetStreamBench, rabbitBench } from './brokers.js';
import { type LateAcquireLog, lateAcquires, until } from './late-store.js';

const bed = jetStreamBed('late-acquire');
const redisStore = (): IdempotencyStore =>
  createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
const queues = amqpQueues();

/** What one consumer saw: its reports' statuses and error codes, and when its handler ran. */
function watch() {
  const seen = { statuses: [] as string[], codes: [] as unknown[], ranAt: [] as number[] };
  return {
    seen,
    options: {
      handler: async () => {
        seen.ranAt.push(performance.now());
        return 'ok';
      },
      onMessage: (r: MessageReport<unknown>) => {
        seen.statuses.push(r.status);
        seen.codes.push((r.error as { code?: unknown } | undefined)?.code);
      },
    },
  };
}

const rabbit = () => rabbitBench(queues, 'late-acquire');
const jetStream = () => jetStreamBench(bed.nc, bed.streams, 'late');

/** A second consumer with a store that answers at once: how the redelivery fares. */
async function redelivery(bench: Bench) {
  const second = watch();
  const consumer = await bench.start(redisStore(), second.options);
  await until(() => second.seen.statuses.length > 0);
  await consumer.stop(2_000);
  return second.seen;
}

/**
 * Runs `check` on a consumer of `open`'s broker, started with `options` on a store whose
 * first acquisition is answered `lateMs` late, once one message was published.
 */
async function late(
  open: () => Promise<Bench>,
  lateMs: number,
  options: object,
  check: (s: {
    bench: Bench;
    log: LateAcquireLog;
    first: ReturnType<typeof watch>;
    consumer: IdempotentConsumer;
  }) => Promise<void>,
): Promise<void> {
  const bench = await open();
  try {
    const { store, log } = lateAcquires(redisStore(), lateMs, (n) => n === 1);
    const first = watch();
    const consumer = await bench.start(store, { ...options, ...first.options });
    await bench.publish();
    await check({ bench, log, first, consumer });
  } finally {
    await bench.close();
  }
}

for (const [name, open] of [
  ['RabbitMQ', rabbit],
  ['NATS JetStream', jetStream],
] as const) {
  describe(`consumers-late: ${name}`, () => {
    it('given back at maxHoldMs while the acquisition is unanswered: stop() waits for it, the handler never runs, the redelivery runs at once', async () => {
      // A RabbitMQ message is held for retryDelayMs (stop() gives it back at once); a
      // JetStream one is nak'ed with it: long enough for stop() to come first.
      await late(
        open,
        700,
        { maxHoldMs: 200, retryDelayMs: 1_000 },
        async ({ bench, log, first, consumer }) => {
          expect(await until(() => first.seen.statuses.length === 1)).toBe(true);
          expect(first.seen.codes).toEqual(['LEASE_LOST']);
          await consumer.stop(5_000);
          const stoppedAt = performance.now();
          // stop() waited for the late answer and its release (owner-checked: still the owner).
          expect(log.lateAnswers).toBe(1);
          expect(log.releases).toEqual([{ ok: true }]);
          await until(() => first.seen.ranAt.length > 0, 200);
          expect(first.seen.ranAt.filter((t) => t >= stoppedAt)).toEqual([]);
          expect(first.seen.ranAt).toEqual([]);
          // The key was released: the redelivery runs the handler now, not a lease (30 s) later.
          const second = await redelivery(bench);
          expect(second.statuses).toEqual(['processed']);
          expect(second.ranAt).toHaveLength(1);
        },
      );
    });

    it('stop(timeoutMs) passes while the acquisition is unanswered: the handler never starts after stop() resolved', async () => {
      await late(open, 600, { retryDelayMs: 100 }, async ({ bench, log, first, consumer }) => {
        expect(await until(() => log.acquires === 1)).toBe(true);
        await consumer.stop(100);
        const stoppedAt = performance.now();
        expect(await log.answeredLate()).toBe(true);
        expect(await until(() => first.seen.statuses.length === 1)).toBe(true);
        expect(first.seen.ranAt.filter((t) => t >= stoppedAt)).toEqual([]);
        expect(first.seen.ranAt).toEqual([]);
        expect(first.seen).toMatchObject({
          statuses: ['failed'],
          codes: ['HANDLER_NOT_STARTED'],
        });
        expect(log.releases).toEqual([{ ok: true }]);
        const second = await redelivery(bench);
        expect(second.statuses).toEqual(['processed']);
      });
    });

    it('given back at maxHoldMs while the acquisition is unanswered, not stopped: the redelivery (100 ms later) runs the handler at once, once', async () => {
      await late(
        open,
        700,
        { maxHoldMs: 200, retryDelayMs: 100 },
        async ({ log, first, consumer }) => {
          // Before the fix: the redelivery found the key held by the late acquisition and was
          // given back for a whole lease (30 s), the handler meanwhile run by the first one.
          expect(await until(() => first.seen.statuses.length === 2)).toBe(true);
          await consumer.stop(2_000);
          expect(first.seen.statuses).toEqual(['failed', 'processed']);
          expect(first.seen.ranAt).toHaveLength(1);
          expect(log.releases).toEqual([{ ok: true }]);
        },
      );
    });
  });
}
