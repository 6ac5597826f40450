// Fixes of review round 10 (rev10a) that a fake channel or consumer shows without a broker:
// stop() gives back held messages at once, stop(timeoutMs) and the function options are
// checked, the JetStream default scope follows the consumer's durability.
import { setTimeout as sleep } from 'node:timers/promises';
import { isIdemError } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type AmqpChannelLike,
  type AmqpMessageLike,
  consumeAmqp,
  consumeJetStream,
  type JetStreamConsumerLike,
  type JsMsgLike,
} from '../src/index.js';
import { uniqueName } from './brokers.js';

const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
const prefix = `${uniqueName('rev10a-consumers-fix')}:`;
afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});
const store = () => createRedisStore({ client: redis, keyPrefix: prefix });

/** A channel that records what it is told; `deliver` hands the consumer a message. */
function fakeChannel() {
  let onMessage: ((m: AmqpMessageLike | null) => void) | undefined;
  const calls: string[] = [];
  let tag = 0;
  const channel: AmqpChannelLike = {
    async consume(_queue, cb) {
      onMessage = cb;
      return { consumerTag: 'ctag' };
    },
    async cancel() {
      calls.push('cancel');
    },
    ack: () => calls.push('ack'),
    nack: (_m, _all, requeue) => calls.push(requeue ? 'nack-requeue' : 'nack-drop'),
    async prefetch() {},
  };
  const deliver = (id: string) =>
    onMessage?.({
      content: new TextEncoder().encode('{}'),
      fields: { deliveryTag: ++tag, redelivered: false },
      properties: { messageId: id },
    });
  return { channel, calls, deliver };
}

describe('rev10a fixes: stop()', () => {
  it('AMQP stop() gives back a message held for retryDelayMs at once (nack with requeue)', async () => {
    const { channel, calls, deliver } = fakeChannel();
    const statuses: string[] = [];
    const consumer = await consumeAmqp({
      store: store(),
      channel,
      queue: uniqueName('q'),
      retryDelayMs: 60_000,
      handler: async () => {
        throw new Error('down');
      },
      onMessage: (r) => statuses.push(r.status),
    });
    deliver(uniqueName('held'));
    const until = performance.now() + 5_000;
    while (statuses.length < 1 && performance.now() < until) await sleep(10);
    expect(statuses).toEqual(['failed']);
    expect(consumer.inFlight).toBe(1); // held for 60 s
    const started = performance.now();
    await consumer.stop(2_000);
    expect(performance.now() - started).toBeLessThan(500);
    expect(calls).toEqual(['cancel', 'nack-requeue']);
    expect(consumer.inFlight).toBe(0);
  });

  it('AMQP stop() gives back at once a duplicate held while the key is in progress elsewhere', async () => {
    const s = store();
    const id = uniqueName('busy');
    let release!: () => void;
    const blocked = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    const first = fakeChannel();
    const holder = await consumeAmqp({
      store: s,
      channel: first.channel,
      queue: 'q',
      handler: async () => {
        started();
        await blocked;
        return 1;
      },
    });
    first.deliver(id);
    await running;
    const second = fakeChannel();
    const statuses: string[] = [];
    const duplicate = await consumeAmqp({
      store: s,
      channel: second.channel,
      queue: 'q',
      leaseMs: 60_000, // the duplicate would be held about a minute
      handler: async () => 1,
      onMessage: (r) => statuses.push(r.status),
    });
    second.deliver(id);
    const until = performance.now() + 5_000;
    while (statuses.length < 1 && performance.now() < until) await sleep(10);
    expect(statuses).toEqual(['in_progress']);
    const stopAt = performance.now();
    await duplicate.stop(2_000);
    expect(performance.now() - stopAt).toBeLessThan(500);
    expect(second.calls).toEqual(['cancel', 'nack-requeue']);
    release();
    await holder.stop(2_000);
    expect(first.calls).toEqual(['cancel', 'ack']); // stop waited for the handler's ack
  });

  it('stop(timeoutMs): NaN, negative and finite values past 2^31-1 are refused; Infinity waits', async () => {
    const { channel } = fakeChannel();
    const consumer = await consumeAmqp({
      store: store(),
      channel,
      queue: uniqueName('q'),
      handler: async () => 1,
    });
    for (const bad of [Number.NaN, -1, 2 ** 31, '10' as unknown as number])
      await expect(consumer.stop(bad)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await consumer.stop(Number.POSITIVE_INFINITY); // nothing in flight: returns
    const js = await consumeJetStream({
      store: store(),
      consumer: fakeJetStream([], 'durable').consumer,
      handler: async () => 1,
    });
    for (const bad of [Number.NaN, -1, 2 ** 31])
      await expect(js.stop(bad)).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await js.stop(1_000);
  });
});

describe('rev10a fixes: listeners', () => {
  it('onMessage that throws, returns a rejecting promise or thenable: no unhandled rejection, acks unchanged', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const { channel, calls, deliver } = fakeChannel();
      let n = 0;
      const consumer = await consumeAmqp({
        store: store(),
        channel,
        queue: 'q',
        prefetch: 1,
        handler: async () => 1,
        onMessage: (() => {
          n++;
          if (n === 1) throw new Error('sync listener failure');
          if (n === 2) return Promise.reject(new Error('async listener failure'));
          // Not a native promise: a thenable that rejects.
          // biome-ignore lint/suspicious/noThenProperty: a thenable is what this listener returns
          return { then: (_ok: unknown, fail: (e: unknown) => void) => fail(new Error('then')) };
        }) as unknown as () => void,
      });
      for (const id of ['l1', 'l2', 'l3']) deliver(uniqueName(id));
      const until = performance.now() + 5_000;
      while (n < 3 && performance.now() < until) await sleep(10);
      await sleep(100); // unhandled rejections are reported after a macrotask
      await consumer.stop(1_000);
      expect(calls).toEqual(['ack', 'ack', 'ack', 'cancel']);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});

describe('rev10a fixes: options checked at creation', () => {
  it('payload and onMessage that are not functions are typed errors (payload false is fine)', async () => {
    for (const bad of [
      { payload: 'body' as unknown as () => string },
      { onMessage: 'log' as unknown as () => void },
      { key: 42 as unknown as () => string },
    ]) {
      const { channel, calls } = fakeChannel();
      await expect(
        consumeAmqp({ store: store(), channel, queue: 'q', handler: async () => 1, ...bad }),
      ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
      expect(calls).toEqual([]);
    }
    const { channel } = fakeChannel();
    const ok = await consumeAmqp({
      store: store(),
      channel,
      queue: 'q',
      payload: false,
      handler: async () => 1,
    });
    await ok.stop(1_000);
  });

  it("queue '' is accepted with an explicit scope", async () => {
    const { channel } = fakeChannel();
    await expect(
      consumeAmqp({ store: store(), channel, queue: '', handler: async () => 1 }),
    ).rejects.toSatisfy((e: unknown) => isIdemError(e, 'INVALID_INPUT'));
    const ok = await consumeAmqp({
      store: store(),
      channel,
      queue: '',
      scope: ['amqp', 'cache-invalidation', 'instance-7'],
      handler: async () => 1,
    });
    await ok.stop(1_000);
  });

  it('JetStream: workingIntervalMs NaN, Infinity, 0 and past 2^31-1 are refused', async () => {
    for (const workingIntervalMs of [Number.NaN, Number.POSITIVE_INFINITY, 0, 2 ** 31])
      await expect(
        consumeJetStream({
          store: store(),
          consumer: fakeJetStream([], 'durable').consumer,
          workingIntervalMs,
          handler: async () => 1,
        }),
      ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  });
});

/** A JetStream consumer that yields `messages` then waits; `durableName` for its info(). */
function fakeJetStream(messages: JsMsgLike[], durableName?: string) {
  const consumer: JetStreamConsumerLike<JsMsgLike> = {
    async consume() {
      let stop!: () => void;
      const stopped = new Promise<void>((resolve) => {
        stop = resolve;
      });
      return {
        stop: () => stop(),
        async *[Symbol.asyncIterator]() {
          yield* messages;
          await stopped;
        },
      };
    },
    async info() {
      return { name: 'x', config: durableName ? { durable_name: durableName } : {} };
    },
  };
  return { consumer };
}

function jsMessage(stream: string, consumerName: string, seq: number): JsMsgLike {
  return {
    data: new TextEncoder().encode('{}'),
    seq,
    info: { stream, consumer: consumerName, streamSequence: seq, redeliveryCount: 1 },
    ack() {},
    nak() {},
    working() {},
    term() {},
  };
}

describe('rev10a fixes: the JetStream default scope', () => {
  it('durable consumers keep their name in the scope; non-durable ones (random names) need a scope', async () => {
    const stream = uniqueName('s');
    const s = store();
    async function run(consumerName: string, durableName: string | undefined, scope?: string[]) {
      const statuses: string[] = [];
      const c = await consumeJetStream({
        store: s,
        consumer: fakeJetStream([jsMessage(stream, consumerName, 1)], durableName).consumer,
        handler: async () => 1,
        onMessage: (r) => statuses.push(r.status),
        ...(scope ? { scope } : {}),
      });
      const until = performance.now() + 5_000;
      while (statuses.length < 1 && performance.now() < until) await sleep(10);
      await c.stop(1_000);
      return statuses;
    }
    // Two durable consumers (two applications): each runs the message.
    expect(await run('billing', 'billing')).toEqual(['processed']);
    expect(await run('shipping', 'shipping')).toEqual(['processed']);
    // Ephemeral consumers with random names: refused without a scope, nothing handled.
    await expect(run('OC_a1', undefined)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('needs an explicit scope'),
    });
    // With one, the second start (another random name) replays.
    expect(await run('OC_a1', undefined, ['app', stream])).toEqual(['processed']);
    expect(await run('OC_b2', undefined, ['app', stream])).toEqual(['replayed']);
  });
});
