// consstop30: on RabbitMQ, a stop() whose cancel the broker does not answer within `timeoutMs`
// (the broker silent towards this connection: a TCP proxy on loopback that holds what either
// side sends, then delivers it, in order, when the broker "comes back"). Once `timeoutMs` has
// passed no handler may start (the application may close the store and exit once stop()
// resolved), so a delivery that comes then must be given back (nack with requeue) without its
// key function or its handler being called. Before: the processor was closed only after the
// waits that follow the cancel (a setImmediate, then the waits for the messages in flight and
// for the engine's writes, a few event-loop turns even with no time left), and a delivery that
// came meanwhile was processed as before the stop: its key asked, its acquisition sent, its
// handler started if the store answered first, and stop() did not wait for it.
import { createRedisStore } from '@idem/store-redis';
import amqp, { type Channel, type ConsumeMessage } from 'amqplib';
import { describe, expect, it } from 'vitest';
import { consumeAmqp, type IdempotentConsumer, type MessageReport } from '../src/index.js';
import { AMQP_URL, amqpQueues, connectAmqp, redisBed, uniqueName } from './brokers.js';
import { until } from './late-store.js';
import { silentableProxy, within } from './silent-proxy.js';

const { redis, prefix } = redisBed('consstop30-cancel');
const queues = amqpQueues();
const store = () => createRedisStore({ client: redis, keyPrefix: prefix });
const idOf = (m: ConsumeMessage) => String(m.properties.messageId);
const codeOf = (error: unknown) => (error as { code?: unknown } | undefined)?.code;

/** RabbitMQ through a proxy that can hold the broker's traffic, and a direct connection. */
async function silentRabbit() {
  const target = new URL(AMQP_URL);
  const proxy = await silentableProxy({
    host: target.hostname,
    port: Number(target.port || 5672),
  });
  const viaProxy = new URL(AMQP_URL);
  viaProxy.hostname = '127.0.0.1';
  viaProxy.port = String(proxy.port);
  const direct = await connectAmqp();
  const proxied = await amqp.connect(viaProxy.toString(), { timeout: 5_000 });
  proxied.on('error', () => undefined);
  const publisher = await direct.createConfirmChannel();
  const queue = uniqueName('consstop30-cancel');
  queues.push(queue);
  await publisher.assertQueue(queue, { durable: false });
  return {
    proxy,
    queue,
    proxied,
    async publish(id: string) {
      publisher.sendToQueue(queue, Buffer.from(id), { messageId: id });
      await publisher.waitForConfirms();
    },
    /** Another instance (direct connection): the ids its handler ran, once it ran `count`. */
    async otherRuns(count: number): Promise<string[]> {
      const runs: string[] = [];
      const other = await consumeAmqp<ConsumeMessage, string>({
        channel: await direct.createChannel(),
        queue,
        store: store(),
        handler: async (m) => {
          runs.push(idOf(m));
          return 'second';
        },
      });
      await until(() => runs.length >= count, 10_000);
      await other.stop(2_000);
      return runs.sort();
    },
    async close() {
      proxy.resume();
      await within(
        proxied.close().catch(() => undefined),
        2_000,
      );
      await proxy.close();
      await direct.close().catch(() => undefined);
    },
  };
}

/** What the consumer under test did per message id. */
function ledger() {
  const keyed: string[] = [];
  const runs: string[] = [];
  const seen: Array<[string, string, unknown]> = [];
  return {
    keyed,
    runs,
    seen,
    options: {
      store: store(),
      maxHoldMs: 60_000,
      key: (m: ConsumeMessage) => {
        keyed.push(idOf(m));
        return idOf(m);
      },
      onMessage: (r: MessageReport<ConsumeMessage>) =>
        seen.push([idOf(r.message), r.status, codeOf(r.error)]),
    },
  };
}

describe('consstop30: RabbitMQ, a delivery once a stop() gave up waiting for the cancel', () => {
  it('one that comes as the stop gives up on the cancel: given back, its key function and handler never called; it runs once elsewhere', {
    timeout: 40_000,
  }, async () => {
    const bed = await silentRabbit();
    let consumer: IdempotentConsumer | undefined;
    try {
      const held = uniqueName('held');
      const late = uniqueName('late');
      const log = ledger();
      const channel = await bed.proxied.createChannel();
      channel.on('error', () => undefined);
      // The late delivery reaches the consumer when the stop gives back the message it holds
      // for a later delivery (its nack): the moment the stop has given up on the cancel, its
      // `timeoutMs` passed. (It came from the broker earlier; only its hand-over is timed.)
      let deliver: ((m: ConsumeMessage | null) => void) | undefined;
      let parked: ConsumeMessage | undefined;
      const timed = new Proxy(channel, {
        get(target, name, receiver) {
          if (name === 'consume')
            return (q: string, onMessage: (m: ConsumeMessage | null) => void, o: object) => {
              deliver = onMessage;
              return target.consume(
                q,
                (m) => {
                  if (m !== null && idOf(m) === late) parked = m;
                  else onMessage(m);
                },
                o,
              );
            };
          if (name === 'nack')
            return (m: ConsumeMessage, allUpTo?: boolean, requeue?: boolean) => {
              target.nack(m, allUpTo, requeue);
              if (idOf(m) === held && parked !== undefined) {
                const m2 = parked;
                parked = undefined;
                deliver?.(m2);
              }
            };
          return Reflect.get(target, name, receiver);
        },
      }) as Channel;
      consumer = await consumeAmqp<ConsumeMessage, string>({
        ...log.options,
        channel: timed,
        queue: bed.queue,
        // The held message waits a minute for its next delivery: the stop gives it back.
        retryDelayMs: 60_000,
        handler: async (m) => {
          log.runs.push(idOf(m));
          if (idOf(m) === held) throw new Error('fails, to be held for a later delivery');
          return 'first';
        },
      });
      await bed.publish(held);
      expect(await until(() => log.seen.length === 1, 10_000)).toBe(true);
      await bed.publish(late);
      expect(await until(() => parked !== undefined, 10_000)).toBe(true);
      // The broker falls silent towards this connection: the cancel is not answered.
      bed.proxy.hold();
      expect(await within(consumer.stop(300), 10_000)).not.toBe('timeout');
      // The late delivery was handed over during the stop, and given back at once.
      expect(parked).toBeUndefined();
      expect(await until(() => log.seen.length === 2, 5_000)).toBe(true);
      // Before: ['held', 'late'] (the late delivery's key asked once the cancel had timed out).
      expect(log.keyed).toEqual([held]);
      expect(log.runs).toEqual([held]);
      expect(log.seen).toEqual([
        [held, 'failed', undefined],
        [late, 'failed', 'HANDLER_NOT_STARTED'],
      ]);
      // The broker comes back: it takes the cancel, then the two requeues. Another instance
      // runs both (the held one's first run failed, its key released), the late one once.
      bed.proxy.resume();
      expect(await bed.otherRuns(2)).toEqual([held, late].sort());
      expect(log.runs).toEqual([held]);
    } finally {
      await bed.close();
    }
  });

  it('one the broker sent while silent, received once stop() resolved: given back, its key function and handler never called; it runs once elsewhere', {
    timeout: 40_000,
  }, async () => {
    const bed = await silentRabbit();
    try {
      const late = uniqueName('late');
      const log = ledger();
      const channel = await bed.proxied.createChannel();
      channel.on('error', () => undefined);
      const consumer = await consumeAmqp<ConsumeMessage, string>({
        ...log.options,
        channel,
        queue: bed.queue,
        handler: async (m) => {
          log.runs.push(idOf(m));
          return 'first';
        },
      });
      bed.proxy.hold();
      await bed.publish(late);
      // The broker sent the delivery; the proxy holds it.
      expect(await until(() => bed.proxy.heldDown() > 0, 10_000)).toBe(true);
      expect(await within(consumer.stop(300), 10_000)).not.toBe('timeout');
      bed.proxy.resume();
      expect(await until(() => log.seen.length === 1, 10_000)).toBe(true);
      expect(log.seen).toEqual([[late, 'failed', 'HANDLER_NOT_STARTED']]);
      expect([log.keyed, log.runs]).toEqual([[], []]);
      expect(await bed.otherRuns(1)).toEqual([late]);
      expect(log.runs).toEqual([]);
    } finally {
      await bed.close();
    }
  });
});
