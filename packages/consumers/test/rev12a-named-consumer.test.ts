import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg, type NatsConnection } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type JsMsgLike } from '../src/index.js';
import { jetStreamBed } from './brokers.js';

// rev12a: attacks on 1c5091e (a JetStream consumer with a config `name` and an ack_policy
// other than none is taken without a scope, its name in the default scope). Real NATS
// JetStream on 4222 and Redis on 6379.

const bed = jetStreamBed('rev12a-consumers');
const store = () => createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
const stream = () => bed.stream();

const until = async (done: () => boolean, ms = 5_000) => {
  const end = Date.now() + ms;
  while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
};

async function runNamed(
  js: ReturnType<NatsConnection['jetstream']>,
  streamName: string,
  consumer: string,
  ran: string[],
) {
  const named = await js.consumers.get(streamName, consumer);
  return consumeJetStream({
    consumer: named as never,
    store: store(),
    handler: async (m: JsMsg) => {
      ran.push(`${consumer}:${new TextDecoder().decode(m.data)}`);
      return 'ok';
    },
  });
}

describe('rev12a consumeJetStream and application-named consumers', () => {
  it('held: a named consumer deleted and made again under the same name (a restart) does not run its messages again', async () => {
    const { jsm, name, js } = await stream();
    const config = {
      name: 'shipping',
      ack_policy: AckPolicy.Explicit,
      inactive_threshold: 60_000_000_000,
    };
    await jsm.consumers.add(name, config);
    for (const n of [1, 2]) await js.publish(`${name}.o`, new TextEncoder().encode(`m${n}`));
    const ran: string[] = [];
    const first = await runNamed(js, name, 'shipping', ran);
    await until(() => ran.length >= 2);
    await first.stop(2_000);
    expect(ran).toEqual(['shipping:m1', 'shipping:m2']);
    // A restart that makes the consumer again (deliver all): every message comes again.
    await jsm.consumers.delete(name, 'shipping');
    await jsm.consumers.add(name, config);
    const again = await runNamed(js, name, 'shipping', ran);
    const handle = await js.consumers.get(name, 'shipping');
    let after = await handle.info();
    const end = Date.now() + 5_000;
    while (after.ack_floor.stream_seq < 2 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50));
      after = await handle.info();
    }
    await again.stop(2_000);
    // Redelivered and acked from the recorded outcomes: not run again.
    expect(after.ack_floor.stream_seq).toBe(2);
    expect(after.num_ack_pending + after.num_pending).toBe(0);
    expect(ran).toEqual(['shipping:m1', 'shipping:m2']);
  });

  it('held: two applications with their own named consumers of one stream each run every message once', async () => {
    const { jsm, name, js } = await stream();
    for (const consumer of ['billing', 'shipping'])
      await jsm.consumers.add(name, {
        name: consumer,
        ack_policy: AckPolicy.Explicit,
        inactive_threshold: 60_000_000_000,
      });
    await js.publish(`${name}.o`, new TextEncoder().encode('m1'), { msgID: 'order-1' });
    const ran: string[] = [];
    const a = await runNamed(js, name, 'billing', ran);
    const b = await runNamed(js, name, 'shipping', ran);
    await until(() => ran.length >= 2);
    await Promise.all([a.stop(2_000), b.stop(2_000)]);
    expect(ran.sort()).toEqual(['billing:m1', 'shipping:m1']);
  });

  function fakeConsumer(info: () => Promise<unknown>) {
    let stopped = 0;
    const consumer = {
      consume: async () => ({
        stop: () => {
          stopped++;
        },
        async *[Symbol.asyncIterator](): AsyncGenerator<JsMsgLike> {},
      }),
      info,
    };
    return { consumer, stopped: () => stopped };
  }

  it.each<[string, () => Promise<unknown>]>([
    [
      'a name with ack_policy none (an ordered consumer)',
      async () => ({ config: { name: 'x_1', ack_policy: 'none' } }),
    ],
    ['a name without ack_policy', async () => ({ config: { name: 'x' } })],
    ['an empty name', async () => ({ config: { name: '', ack_policy: 'explicit' } })],
    ['a name that is not a string', async () => ({ config: { name: 7, ack_policy: 'explicit' } })],
    ['no info', async () => undefined],
    ['no config', async () => ({ name: 'x' })],
  ])(
    'held: a consumer whose info gives %s is refused without a scope, its messages stopped',
    async (_name, info) => {
      const { consumer, stopped } = fakeConsumer(info);
      await expect(
        consumeJetStream({
          consumer: consumer as never,
          store: store(),
          handler: async () => 'ok',
        }),
      ).rejects.toThrow(/explicit scope/);
      expect(stopped()).toBe(1);
    },
  );

  it('held: info() that throws rejects the start and stops the messages', async () => {
    const { consumer, stopped } = fakeConsumer(async () => {
      throw new Error('info failed');
    });
    await expect(
      consumeJetStream({ consumer: consumer as never, store: store(), handler: async () => 'ok' }),
    ).rejects.toThrow('info failed');
    expect(stopped()).toBe(1);
  });
});
