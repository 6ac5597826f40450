// consumers34: a JetStream duplicate held for a local run of its key (see consumers33) asks the
// store again when that run ends. Two holes: (1) its handler could start beside a run of the
// same key that still ran here (the first run given back at maxHoldMs runs on, its lease no
// longer renewed: a redelivery acquired the key once the lease passed); (2) a recheck that found
// the key free ran the handler at once, beyond `concurrency` (the slot the held duplicate left
// had been taken meanwhile). On the real NATS JetStream and Redis.
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageStatus } from '../src/index.js';
import { jetStreamBed } from './brokers.js';
import { until } from './late-store.js';

function gate() {
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { open, opened };
}

describe('consumers34: the rerun of a held JetStream duplicate', () => {
  const bed = jetStreamBed('consumers34-js-rerun');

  it('never starts beside a run of its key still running here, nor beyond `concurrency`', {
    timeout: 30_000,
  }, async () => {
    const { js, jsm, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const gates = { k: gate(), x: gate() };
    const running = new Map<string, number>();
    let busy = 0;
    // At each handler start: [key, runs of the same key already running, handlers running].
    const starts: Array<[string, number, number]> = [];
    const reports: Array<[string, MessageStatus]> = [];
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}a:` }),
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      key: (message: JsMsg) => new TextDecoder().decode(message.data),
      payload: false,
      concurrency: 1,
      leaseMs: 600,
      // The first run is given back (its slot freed) while its handler runs on.
      maxHoldMs: 1_000,
      retryDelayMs: 50,
      handler: async (message: JsMsg) => {
        const key = new TextDecoder().decode(message.data);
        starts.push([key, running.get(key) ?? 0, busy]);
        running.set(key, (running.get(key) ?? 0) + 1);
        busy += 1;
        try {
          // Only the first run of each key waits.
          if (starts.filter(([k]) => k === key).length === 1) await gates[key as 'k' | 'x'].opened;
          return 'done';
        } finally {
          busy -= 1;
          running.set(key, (running.get(key) ?? 0) - 1);
        }
      },
      onMessage: ({ message, status }) =>
        reports.push([new TextDecoder().decode(message.data), status]),
    });
    try {
      await js.publish(`${name}.orders`, 'k');
      // Given back at maxHoldMs, its handler still running; its redeliveries meet it.
      expect(await until(() => reports.some(([k, s]) => k === 'k' && s === 'failed'), 10_000)).toBe(
        true,
      );
      expect(
        await until(() => reports.some(([k, s]) => k === 'k' && s === 'in_progress'), 10_000),
        JSON.stringify({ starts, reports }),
      ).toBe(true);
      // Past the first run's lease (no longer renewed): a redelivery could acquire the key.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      // The slot the first run left is taken.
      await js.publish(`${name}.orders`, 'x');
      expect(await until(() => starts.some(([k]) => k === 'x'), 10_000)).toBe(true);
      gates.k.open();
      // The first run ended: the held duplicate's recheck
      // finds it failed (its lease given up at maxHoldMs) and gives the message back: it runs
      // again once x has ended (concurrency 1).
      await new Promise((resolve) => setTimeout(resolve, 500));
      gates.x.open();
      expect(await until(() => starts.filter(([k]) => k === 'k').length === 2, 10_000)).toBe(true);
      expect(await until(() => running.get('k') === 0 && busy === 0, 10_000)).toBe(true);
      // No run of k beside another (the old code: ['k', 1, 1], the redelivery ran at once);
      // none beyond concurrency once the first run had ended.
      expect(
        starts.filter(([, same]) => same > 0),
        JSON.stringify({ starts, reports }),
      ).toEqual([]);
      console.log(JSON.stringify({ starts, reports }));
      expect(starts.slice(2)).toEqual([['k', 0, 0]]);
    } finally {
      gates.k.open();
      gates.x.open();
      await consumer.stop(5_000);
    }
  });
});
