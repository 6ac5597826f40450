import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { jetStreamBed } from './brokers.js';

// rev11: consumeJetStream refuses an ordered / ephemeral consumer without an explicit scope
// (its name changes at every start). Against a real NATS JetStream: which consumers does the
// durable_name test accept, and does one it accepts keep its messages' keys across restarts?

const bed = jetStreamBed('rev11-consumers-js');
const createStore = () => createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
const stream = () => bed.stream();

describe('rev11 JetStream consumers and the default scope', () => {
  it('an ordered consumer without a scope is refused; a durable one is taken', async () => {
    const { jsm, name, js } = await stream();
    const ordered = await js.consumers.get(name);
    await expect(
      consumeJetStream({
        consumer: ordered as never,
        store: createStore(),
        handler: async () => 'ok',
      }),
    ).rejects.toThrow(/explicit scope/);
    await jsm.consumers.add(name, { durable_name: 'billing', ack_policy: AckPolicy.Explicit });
    const durable = await js.consumers.get(name, 'billing');
    const running = await consumeJetStream({
      consumer: durable as never,
      store: createStore(),
      handler: async () => 'ok',
    });
    await running.stop(2_000);
  });

  // FIXED (was FINDING LOW): a named (non-durable) consumer created with a stable `name` (NATS 2.9+ API) was refused without a scope although its name, and so the default scope, is the same at every start
  it('a consumer with a stable name but no durable_name is taken (its name does not change)', async () => {
    const { jsm, name, js } = await stream();
    await jsm.consumers.add(name, {
      name: 'shipping',
      ack_policy: AckPolicy.Explicit,
      inactive_threshold: 60_000_000_000,
    });
    const named = await js.consumers.get(name, 'shipping');
    await js.publish(`${name}.orders`, new TextEncoder().encode('order 1'));
    const seen: string[] = [];
    const running = await consumeJetStream({
      consumer: named as never,
      store: createStore(),
      handler: async (m: JsMsg) => {
        seen.push(m.info.consumer);
        return 'ok';
      },
    });
    const until = Date.now() + 5_000;
    while (seen.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    await running.stop(2_000);
    // Handled under its own name (the default scope ['nats', stream, 'shipping']).
    expect(seen).toEqual(['shipping']);
  });

  it('an ephemeral consumer the server named (explicit acks, no name given) is still refused', async () => {
    const { jsm, name, js } = await stream();
    const added = await jsm.consumers.add(name, { ack_policy: AckPolicy.Explicit });
    const ephemeral = await js.consumers.get(name, added.name);
    await expect(
      consumeJetStream({
        consumer: ephemeral as never,
        store: createStore(),
        handler: async () => 'ok',
      }),
    ).rejects.toThrow(/explicit scope/);
  });
});
