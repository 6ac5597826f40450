// consrev: a message whose key or payload function is still pending when its processor is
// closed (`close()`, which a consumer's stop() calls) must be given back once that function
// settles, whatever it answers: the application closes what the function reads (a database) after stop(), and
// the function then fails. Before the fix such a failure rejected the message (nack without
// requeue / term: dropped without a dead-letter exchange) although its handler had never
// started and the consumer had stopped. And a consumer's stop() (even stop(Infinity)) no
// longer waits up to `maxHoldMs` for a key function that never settles: a message that has
// not reached the store is given back at the stop.
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { type MessageReport, messageProcessor } from '../src/index.js';
import {
  amqpQueues,
  type Bench,
  jetStreamBed,
  jetStreamBench,
  rabbitBench,
  uniqueName,
} from './brokers.js';
import { lateAcquires, until } from './late-store.js';
import { within } from './silent-proxy.js';

interface Msg {
  id: string;
  body: string;
}

const bed = jetStreamBed('consrev-stopped');
const store = () => createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
const queues = amqpQueues();
const benches = [
  ['RabbitMQ', () => rabbitBench(queues, 'consrev-stopped')],
  ['NATS JetStream', () => jetStreamBench(bed.nc, bed.streams, 'consrev')],
] as const;

/** A consumer on `bench` (store: Redis) and the statuses and error codes it reported. */
async function watched(bench: Bench, options: object) {
  const seen: Array<[string, unknown]> = [];
  const consumer = await bench.start(store(), {
    retryDelayMs: 50,
    onMessage: (r: MessageReport<unknown>) =>
      seen.push([r.status, (r.error as { code?: unknown } | undefined)?.code]),
    ...options,
  });
  return { consumer, seen };
}

/** A function's answer the test gives when it likes. */
function pending<T>() {
  let settle!: { resolve: (value: T) => void; reject: (error: unknown) => void };
  const promise = new Promise<T>((resolve, reject) => {
    settle = { resolve, reject };
  });
  return { promise, ...settle };
}

describe('consrev: a key or payload function that settles once the processor is closed', () => {
  for (const [what, settles] of [
    ['key function rejects', { key: 'reject' }],
    ['key function answers undefined', { key: 'undefined' }],
    ['payload function rejects', { payload: 'reject' }],
  ] as const) {
    it(`${what}: given back (HANDLER_NOT_STARTED), never rejected`, async () => {
      const key = pending<string | undefined>();
      const body = pending<string>();
      const runs: string[] = [];
      const p = messageProcessor<Msg, unknown>(
        {
          store: store(),
          retryDelayMs: 50,
          handler: async (m) => {
            runs.push(m.body);
            return m.body;
          },
          key: () => ('key' in settles ? key.promise : uniqueName('k')),
          payload: () => ('payload' in settles ? body.promise : 'b'),
        },
        {
          defaultKey: (m) => m.id,
          body: (m) => new TextEncoder().encode(m.body),
          defaultScope: () => ['consrev', 'stopped'],
        },
      );
      const processing = p.process({ id: 'unused', body: 'b' });
      p.close();
      // The application closed what the function reads: it fails (or finds nothing).
      if ('key' in settles) {
        if (settles.key === 'reject') key.reject(new Error('connection closed'));
        else key.resolve(undefined);
      } else body.reject(new Error('connection closed'));
      const disposition = await processing;
      expect(disposition).toMatchObject({ action: 'retry', status: 'failed' });
      expect((disposition as { error: { code?: string } }).error.code).toBe('HANDLER_NOT_STARTED');
      expect(runs).toEqual([]);
    });
  }
});

describe('consrev: the consumer stops while a message has not reached the store', () => {
  it('process(bounds.signal): a key function still pending is given back at the abort, one whose acquisition was sent runs', async () => {
    const { store: late, log } = lateAcquires(store(), 300, (n) => n === 1);
    const runs: string[] = [];
    const p = messageProcessor<Msg, unknown>(
      {
        store: late,
        retryDelayMs: 50,
        handler: async (m) => {
          runs.push(m.body);
          return m.body;
        },
        // 'hang' is looked up in a database that never answers.
        key: (m) => (m.body === 'hang' ? new Promise<string>(() => {}) : m.id),
      },
      {
        defaultKey: (m) => m.id,
        body: (m) => new TextEncoder().encode(m.body),
        defaultScope: () => ['consrev', 'signal'],
      },
    );
    const stopping = new AbortController();
    const hanging = p.process({ id: uniqueName('k'), body: 'hang' }, { signal: stopping.signal });
    const sent = p.process({ id: uniqueName('k'), body: 'sent' }, { signal: stopping.signal });
    expect(await until(() => log.acquires === 1)).toBe(true);
    stopping.abort();
    const given = await within(hanging, 2_000);
    expect(given).toMatchObject({ action: 'retry', status: 'failed' });
    expect((given as { error: { code?: string } }).error.code).toBe('HANDLER_NOT_STARTED');
    // The acquisition sent before the stop is answered (late) and its handler runs.
    expect(await sent).toMatchObject({ action: 'ack', status: 'processed' });
    expect([log.acquires, runs]).toEqual([1, ['sent']]);
  });

  for (const [name, open] of benches) {
    it(`${name}: stop(Infinity) with a key function that never settles returns (maxHoldMs 60 s); the message runs once elsewhere`, async () => {
      const bench = await open();
      try {
        let asked = false;
        const first = await watched(bench, {
          maxHoldMs: 60_000,
          // The key is looked up in a database that never answers.
          key: () => {
            asked = true;
            return new Promise<string>(() => {});
          },
        });
        await bench.publish();
        expect(await until(() => asked)).toBe(true);
        // Before the fix stop(Infinity) waited for the key function up to maxHoldMs.
        expect(await within(first.consumer.stop(Number.POSITIVE_INFINITY), 5_000)).not.toBe(
          'timeout',
        );
        expect(first.seen).toEqual([['failed', 'HANDLER_NOT_STARTED']]);
        // Another instance gets the message and runs it once.
        const runs: string[] = [];
        const second = await watched(bench, {
          handler: async () => {
            runs.push('second');
            return 'second';
          },
        });
        expect(await until(() => second.seen.length > 0)).toBe(true);
        await second.consumer.stop(2_000);
        expect([second.seen, runs]).toEqual([[['processed', undefined]], ['second']]);
      } finally {
        await bench.close();
      }
    });
  }
});
