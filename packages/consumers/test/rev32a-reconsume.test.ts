// rev32a: a JetStream pull that nats.js ends by itself is consumed again "at growing intervals
// (1 s to 30 s)". Two defects of the merge 60281dcf, shown here on fakes shaped like nats.js
// 2.x (no broker needed; the store is never reached: no message is delivered):
// - the wait was set back to 1 s as soon as consume() answered, and nats.js's consume() always
//   answers (the pull request and its 400 come later): a pull the broker refuses every time
//   was consumed again every second for ever, 'lost'/'resumed' reported each time;
// - each pull hung a reaction on the connection's `closed()` promise (one for the connection's
//   life) that held the pull, and with it the whole consumer (processor, engine, store), until
//   the connection closed: consumers started and stopped on a long-lived connection, and every
//   pull consumed again, were never collected.

import { createRedisStore } from '@idem/store-redis';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type ConsumerStatus, consumeJetStream, type JsMsgLike } from '../src/index.js';

/** A connection whose `closed()` counts the reactions hung on it (it never settles here). */
function fakeConnection() {
  const reactions = { count: 0 };
  const closed = {
    // biome-ignore lint/suspicious/noThenProperty: a thenable standing in for nats.js's promise
    then(_resolve: unknown, _reject?: unknown) {
      reactions.count += 1;
      return closed;
    },
  };
  return { nc: { isClosed: () => false, closed: () => closed }, reactions };
}

/** A pull consumer whose every pull ends at once (nats.js after a 400 to its pull request). */
function refusedPulls(nc: object) {
  const calls = { consume: 0 };
  const consumer = {
    async consume() {
      calls.consume += 1;
      return {
        consumer: { api: { nc } },
        stop() {},
        async *[Symbol.asyncIterator](): AsyncGenerator<JsMsgLike> {},
      };
    },
    async info() {
      return { config: { durable_name: 'w', ack_policy: 'explicit', ack_wait: 30_000_000_000 } };
    },
  };
  return { consumer, calls };
}

/** A pull consumer whose pulls run until stopped. */
function livePulls(nc: object) {
  return {
    async consume() {
      let end: (() => void) | undefined;
      let ended = false;
      return {
        consumer: { api: { nc } },
        stop() {
          ended = true;
          end?.();
        },
        async *[Symbol.asyncIterator](): AsyncGenerator<JsMsgLike> {
          if (!ended)
            await new Promise<void>((resolve) => {
              end = resolve;
            });
        },
      };
    },
    async info() {
      return { config: { durable_name: 'w', ack_policy: 'explicit', ack_wait: 30_000_000_000 } };
    },
  };
}

const redis = new Redis({ lazyConnect: true });
const store = () => createRedisStore({ client: redis, keyPrefix: 'rev32a-never-used:' });

afterEach(() => {
  vi.useRealTimers();
});

describe('rev32a: JetStream pulls consumed again', () => {
  it('a pull that ends at once every time is consumed again at growing intervals, not every second', async () => {
    vi.useFakeTimers();
    const { nc } = fakeConnection();
    const { consumer, calls } = refusedPulls(nc);
    const statuses: ConsumerStatus[] = [];
    const idem = await consumeJetStream({
      store: store(),
      consumer,
      handler: async () => 'ok',
      onConsumerStatus: (s) => statuses.push(s),
    });
    // 60 s of (fake) time, a second at a time: waits of 1, 2, 4, 8, 16, 30 s make at most 6
    // pulls again (at 1, 3, 7, 15, 31 s); one a second made 60.
    for (let s = 0; s < 60; s++) await vi.advanceTimersByTimeAsync(1_000);
    const again = calls.consume - 1;
    await idem.stop(1_000);
    expect(again).toBeGreaterThanOrEqual(3);
    expect(again).toBeLessThanOrEqual(6);
    expect(statuses.filter((s) => s.type === 'lost').length).toBeLessThanOrEqual(7);
  });

  it('pulls consumed again hang no reaction each on the connection', async () => {
    vi.useFakeTimers();
    const { nc, reactions } = fakeConnection();
    const { consumer, calls } = refusedPulls(nc);
    const idem = await consumeJetStream({ store: store(), consumer, handler: async () => 'ok' });
    for (let s = 0; s < 200; s++) await vi.advanceTimersByTimeAsync(1_000);
    await idem.stop(1_000);
    expect(calls.consume).toBeGreaterThan(5);
    expect(reactions.count).toBeLessThanOrEqual(1);
  });

  it('a connection closed while waiting to consume again is told as a loss for good, not only through closed', async () => {
    vi.useFakeTimers();
    const { nc } = fakeConnection();
    const { consumer } = refusedPulls(nc);
    const refused = Object.assign(new Error('connection closed'), { code: 'CONNECTION_CLOSED' });
    let consumes = 0;
    const closing = {
      ...consumer,
      async consume() {
        consumes += 1;
        if (consumes > 1) throw refused;
        return consumer.consume();
      },
    };
    const statuses: ConsumerStatus[] = [];
    const idem = await consumeJetStream({
      store: store(),
      consumer: closing,
      handler: async () => 'ok',
      onConsumerStatus: (s) => statuses.push(s),
    });
    await vi.advanceTimersByTimeAsync(1_500);
    expect(await idem.closed).toMatchObject({ code: 'CONSUMER_LOST' });
    expect(statuses).toMatchObject([
      { type: 'lost', resubscribing: true },
      { type: 'lost', resubscribing: false },
    ]);
    await idem.stop(1_000);
  });

  it('consumers started and stopped on one connection leave no reaction each on it', async () => {
    const { nc, reactions } = fakeConnection();
    for (let i = 0; i < 20; i++) {
      const idem = await consumeJetStream({
        store: store(),
        consumer: livePulls(nc),
        handler: async () => 'ok',
      });
      await idem.stop(1_000);
      expect(await idem.closed).toBeUndefined();
    }
    expect(reactions.count).toBeLessThanOrEqual(1);
  });
});
