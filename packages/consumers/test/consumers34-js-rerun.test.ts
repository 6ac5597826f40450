// consumers34: a JetStream duplicate held for a local run of its key (see consumers33) asks the
// store again when that run ends. A recheck that found the key free (the record gone
// meanwhile) ran the handler at once, beyond `concurrency`: the slot the held duplicate left
// had been taken meanwhile, its holder's own slot freed when that run was given back at its
// maxHoldMs (its handler running on). It now waits for a slot first; stop() meanwhile gives it
// back. Never beside the run it was held on: it asks again only once that run has ended. On
// the real NATS JetStream and Redis.
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageStatus } from '../src/index.js';
import { gate, jetStreamBed, longLeaseForgetfulStore } from './brokers.js';
import { until } from './late-store.js';

// longLeaseForgetfulStore (brokers.ts): acquisitions stored with a 10 s lease (the key stays
// held at the store past the engine's maxHoldMs: the run's final write still lands, nobody
// having taken the key), final writes leaving nothing behind (retentionMs 0: "the record gone
// meanwhile").

describe('consumers34: the rerun of a held JetStream duplicate', () => {
  const bed = jetStreamBed('consumers34-js-rerun');

  async function recheckScenario(stopWhileWaiting: boolean) {
    const { js, jsm, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const gates = { k: gate(), x: gate() };
    let busy = 0;
    const starts: Array<[string, number]> = [];
    const reports: Array<[number, MessageStatus]> = [];
    let conflicts = 0;
    const consumer = await consumeJetStream({
      store: longLeaseForgetfulStore(
        createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}b:` }),
      ),
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      key: (message: JsMsg) => new TextDecoder().decode(message.data).slice(0, 1),
      payload: false,
      concurrency: 1,
      // The first run is given back (its slot freed) while its handler runs on. (x is given
      // back at it too, ending its task: stop() must not wait for that, see below.)
      maxHoldMs: 1_500,
      retryDelayMs: 50,
      handler: async (message: JsMsg) => {
        const key = new TextDecoder().decode(message.data).slice(0, 1);
        starts.push([key, busy]);
        busy += 1;
        try {
          if (starts.filter(([k]) => k === key).length === 1) await gates[key as 'k' | 'x'].opened;
          return 'done';
        } finally {
          busy -= 1;
        }
      },
      onEvent: (event) => {
        if (event.type === 'conflict') conflicts += 1;
      },
      onMessage: ({ message, status }) => reports.push([message.info.streamSequence, status]),
    });
    try {
      await js.publish(`${name}.orders`, 'k1');
      expect(await until(() => starts.length === 1, 10_000)).toBe(true);
      // Its publisher's resend (another body, the same key): held behind the local run.
      await js.publish(`${name}.orders`, 'k2');
      expect(await until(() => conflicts >= 1, 10_000)).toBe(true);
      // The first run is given back at maxHoldMs (its handler runs on): x takes its slot.
      expect(await until(() => reports.some(([seq]) => seq === 1), 10_000)).toBe(true);
      await js.publish(`${name}.orders`, 'x');
      expect(await until(() => starts.some(([k]) => k === 'x'), 10_000)).toBe(true);
      // The first run ends, recorded and forgotten at once: the held resend's recheck finds the
      // key free. It must wait for x's slot (the old code ran it at once, beside x).
      gates.k.open();
      expect(await until(() => busy === 1, 10_000)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(
        starts.filter(([k]) => k === 'k'),
        JSON.stringify({ starts, reports }),
      ).toEqual([['k', 0]]);
      if (stopWhileWaiting) {
        // stop() while it waits for the slot: given back, its handler never started.
        const stopping = consumer.stop(10_000);
        expect(await until(() => reports.some(([seq]) => seq === 2), 10_000)).toBe(true);
        expect(reports.filter(([seq]) => seq === 2)).toEqual([[2, 'in_progress']]);
        // At the stop, not when x's task ended (given back at its maxHoldMs, x is seq 3).
        expect(reports.some(([seq]) => seq === 3)).toBe(false);
        gates.x.open();
        await stopping;
        expect(starts.filter(([k]) => k === 'k')).toHaveLength(1);
        return;
      }
      gates.x.open();
      expect(
        await until(() => starts.filter(([k]) => k === 'k').length >= 2, 10_000),
        JSON.stringify({ starts, reports }),
      ).toBe(true);
      expect(await until(() => busy === 0, 10_000)).toBe(true);
      // Each later run alone (the first run's own redelivery may run k again too: its record
      // is forgotten as well).
      expect(
        starts.slice(2).filter(([, others]) => others > 0),
        JSON.stringify({ starts, reports }),
      ).toEqual([]);
      expect(await until(() => reports.some(([seq]) => seq === 2), 10_000)).toBe(true);
      expect(reports.filter(([seq]) => seq === 2)).toEqual([[2, 'processed']]);
    } finally {
      gates.k.open();
      gates.x.open();
      await consumer.stop(5_000);
    }
  }

  it(
    'a recheck that finds the key free runs the handler only within `concurrency`',
    {
      timeout: 30_000,
    },
    () => recheckScenario(false),
  );

  it(
    'stop() while a recheck waits for a slot: the duplicate is given back, its handler not run',
    {
      timeout: 30_000,
    },
    () => recheckScenario(true),
  );
});
