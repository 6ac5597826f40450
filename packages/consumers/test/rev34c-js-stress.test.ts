// rev34c: many duplicates of a few keys on JetStream, each held on a local run of its key and
// rerun when that run ends (the store forgets every record at once, so each recheck finds the
// key free and waits for a slot, see consumers34). Handlers that throw now and then. Never more
// handlers at once than `concurrency`, one report per delivery, nothing left in flight after
// stop(), also a stop() in the middle. REV34C_MESSAGES sizes it (40 by default).
import type { IdempotencyStore } from '@idem/core';
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageStatus } from '../src/index.js';
import { jetStreamBed } from './brokers.js';
import { until } from './late-store.js';

const MESSAGES = Number(process.env.REV34C_MESSAGES ?? 40);

function forgetfulStore(inner: IdempotencyStore): IdempotencyStore {
  return new Proxy(inner, {
    get(target, name, receiver) {
      if (name === 'complete')
        return (input: Parameters<IdempotencyStore['complete']>[0]) =>
          target.complete({ ...input, retentionMs: 0 });
      return Reflect.get(target, name, receiver);
    },
  });
}

describe('rev34c: held JetStream duplicates rerun under load', () => {
  const bed = jetStreamBed('rev34c-js-stress');

  async function scenario(concurrency: number, stopMidway: boolean) {
    const { js, jsm, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    let busy = 0;
    let maxBusy = 0;
    let runs = 0;
    let conflicts = 0;
    // A deterministic "random" sequence: the test reads the same every time.
    let seed = 7;
    const next = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed / 2_147_483_648;
    };
    const reports = new Map<string, MessageStatus[]>();
    const acked = new Set<number>();
    const consumer = await consumeJetStream({
      store: forgetfulStore(
        createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}${name}:` }),
      ),
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      key: (message: JsMsg) => new TextDecoder().decode(message.data).slice(0, 1),
      payload: false,
      concurrency,
      maxHoldMs: 5_000,
      retryDelayMs: 20,
      handler: async () => {
        busy += 1;
        runs += 1;
        maxBusy = Math.max(maxBusy, busy);
        try {
          await new Promise((resolve) => setTimeout(resolve, 5 + next() * 25));
          if (next() < 0.2) throw new Error('flaky');
          return 'done';
        } finally {
          busy -= 1;
        }
      },
      onEvent: (event) => {
        if (event.type === 'conflict') conflicts += 1;
      },
      onMessage: ({ message, status }) => {
        const id = `${message.info.streamSequence}:${message.info.redeliveryCount}`;
        reports.set(id, [...(reports.get(id) ?? []), status]);
        if (status === 'processed' || status === 'replayed') acked.add(message.info.streamSequence);
      },
    });
    let stopped = false;
    try {
      for (let n = 0; n < MESSAGES; n++) await js.publish(`${name}.orders`, `${'abc'[n % 3]}${n}`);
      if (stopMidway) {
        expect(await until(() => acked.size >= MESSAGES / 2, 20_000)).toBe(true);
      } else {
        expect(await until(() => acked.size === MESSAGES, 30_000), `${acked.size}`).toBe(true);
      }
      await consumer.stop(10_000);
      stopped = true;
      expect(consumer.inFlight).toBe(0);
      expect(busy).toBe(0);
      // Duplicates were held (in_progress) and rerun: the slot queue was used. (Not with
      // concurrency 1: the loop takes nothing while a handler runs.)
      if (concurrency > 1) expect(conflicts).toBeGreaterThan(0);
      expect(maxBusy, `runs ${runs} conflicts ${conflicts}`).toBeLessThanOrEqual(concurrency);
      expect(runs).toBeGreaterThanOrEqual(stopMidway ? MESSAGES / 2 : MESSAGES);
      const twice = [...reports].filter(([, statuses]) => statuses.length > 1);
      expect(twice).toEqual([]);
    } finally {
      if (!stopped) await consumer.stop(5_000);
    }
  }

  it('concurrency 1, every duplicate rerun', { timeout: 40_000 }, () => scenario(1, false));
  it('concurrency 2, every duplicate rerun', { timeout: 40_000 }, () => scenario(2, false));
  it('concurrency 2, stop() in the middle', { timeout: 40_000 }, () => scenario(2, true));
});
