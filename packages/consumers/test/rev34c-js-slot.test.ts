// rev34c: attacks on consumers34's slot queue for a held JetStream duplicate whose recheck may
// run its handler (the record gone meanwhile). On the real NATS JetStream and Redis.
//
// 1. The loop checked for a free slot before it waited for the next message, not when that
//    message came: a duplicate whose hold ended meanwhile took the free slot (slotFree saw
//    nothing running) and the next message was handled at once beside it (two handlers,
//    concurrency 1).
// 2. A task that became a hold (a duplicate of another local run) freed its slot but woke only
//    the loop, not the duplicates waiting for a slot: the one waiting stayed parked (and the
//    loop with it, counting it as running) until something else ended, here the other run.
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageStatus } from '../src/index.js';
import { gate, jetStreamBed, longLeaseForgetfulStore } from './brokers.js';
import { until } from './late-store.js';

const text = (message: JsMsg) => new TextDecoder().decode(message.data);

describe('rev34c: the slot a held JetStream duplicate waits for', () => {
  const bed = jetStreamBed('rev34c-js-slot');

  /** A consumer (concurrency 1) whose handler waits on `gates[body]` when there is one. */
  async function start(gates: Record<string, { opened: Promise<void> }>, keyGates = gates) {
    const { js, jsm, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    const log = {
      busy: 0,
      starts: [] as Array<[string, number]>,
      reports: [] as Array<[number, MessageStatus]>,
      conflicts: 0,
      keyCalls: [] as string[],
      naks: [] as Array<[string, number | undefined]>,
    };
    const runs = new Map<string, number>();
    const consumer = await consumeJetStream({
      store: longLeaseForgetfulStore(
        createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}${name}:` }),
      ),
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      // The key is the body's first letter; `keyGates['?' + body]` delays the key function.
      key: async (message: JsMsg) => {
        log.keyCalls.push(text(message));
        const nak = message.nak.bind(message);
        message.nak = (millis?: number) => {
          log.naks.push([text(message), millis]);
          nak(millis);
        };
        await keyGates[`?${text(message)}`]?.opened;
        return text(message).slice(0, 1);
      },
      payload: false,
      concurrency: 1,
      maxHoldMs: 1_000,
      // A message given back at maxHoldMs comes back only after the test.
      retryDelayMs: 8_000,
      handler: async (message: JsMsg) => {
        const body = text(message);
        const key = body.slice(0, 1);
        const run = (runs.get(key) ?? 0) + 1;
        runs.set(key, run);
        log.starts.push([`${key}#${run}`, log.busy]);
        log.busy += 1;
        try {
          await gates[`${key}#${run}`]?.opened;
          return 'done';
        } finally {
          log.busy -= 1;
        }
      },
      onEvent: (event) => {
        if (event.type === 'conflict') log.conflicts += 1;
      },
      onMessage: ({ message, status }) => log.reports.push([message.info.streamSequence, status]),
    });
    const publish = (body: string) => js.publish(`${name}.orders`, body);
    const delivered = async () => (await jsm.consumers.info(name, 'w')).delivered.stream_seq;
    return { consumer, log, publish, delivered };
  }

  it('a message pulled while a held duplicate reruns waits for its slot (concurrency 1)', {
    timeout: 20_000,
  }, async () => {
    const gates = { 'k#1': gate(), 'k#2': gate() };
    const { consumer, log, publish, delivered } = await start(gates);
    try {
      await publish('k1');
      expect(await until(() => log.starts.length === 1, 10_000)).toBe(true);
      await publish('k2'); // held behind k#1
      expect(await until(() => log.conflicts >= 1, 10_000)).toBe(true);
      // k#1 given back at maxHoldMs (its handler runs on): the loop waits for a message.
      expect(await until(() => log.reports.some(([seq]) => seq === 1), 10_000)).toBe(true);
      // k#1 ends, recorded and forgotten: the held k2 finds the key free, and a free slot.
      gates['k#1'].open();
      expect(await until(() => log.starts.length === 2, 10_000)).toBe(true);
      expect(log.busy).toBe(1);
      // x comes while k2's rerun runs: it must wait for that slot.
      await publish('x');
      for (let i = 0; i < 100 && (await delivered()) < 3; i++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      expect(await delivered()).toBe(3);
      // x is in the client now (a few ms to be yielded and, on the old code, handled).
      await until(() => log.starts.length === 3, 500);
      gates['k#2'].open();
      expect(await until(() => log.starts.length === 3, 10_000)).toBe(true);
      expect(log.starts, JSON.stringify(log)).toEqual([
        ['k#1', 0],
        ['k#2', 0],
        ['x#1', 0],
      ]);
    } finally {
      gates['k#1'].open();
      gates['k#2'].open();
      await consumer.stop(5_000);
    }
  });

  it('a duplicate waiting for a slot is let through when the task holding it becomes a hold', {
    timeout: 20_000,
  }, async () => {
    const gates = { 'k#1': gate(), 'b#1': gate(), '?b2': gate() };
    const { consumer, log, publish } = await start(gates);
    try {
      await publish('k1');
      expect(await until(() => log.starts.length === 1, 10_000)).toBe(true);
      await publish('k2'); // held behind k#1
      expect(await until(() => log.conflicts >= 1, 10_000)).toBe(true);
      expect(await until(() => log.reports.some(([seq]) => seq === 1), 10_000)).toBe(true);
      // k#1 given back: b1 takes the slot, and is given back at its maxHoldMs too.
      await publish('b1');
      expect(await until(() => log.starts.length === 2, 10_000)).toBe(true);
      expect(await until(() => log.reports.some(([seq]) => seq === 3), 10_000)).toBe(true);
      // b2 (a resend of b) is taken, its key function pending: it counts as running.
      await publish('b2');
      expect(await until(() => log.keyCalls.includes('b2'), 10_000)).toBe(true);
      // k#1 ends (forgotten): k2's recheck waits for b2's slot.
      gates['k#1'].open();
      expect(await until(() => log.busy === 1, 10_000)).toBe(true);
      // b2 finds b held by the local run b#1: held (no slot). k2 must run now, not once b#1
      // ends (or b2's hold, its lease, passes), the loop blocked meanwhile.
      const conflicts = log.conflicts;
      gates['?b2'].open();
      expect(await until(() => log.conflicts > conflicts, 10_000)).toBe(true);
      const rerun = await until(() => log.starts.length === 3, 3_000);
      gates['b#1'].open();
      expect(rerun, JSON.stringify(log)).toBe(true);
      expect(log.starts[2]?.[0]).toBe('k#2');
    } finally {
      for (const g of Object.values(gates)) g.open();
      await consumer.stop(5_000);
    }
  });

  it('stop() while a rerun waits for a slot gives its message back at once, not after the lease', {
    timeout: 20_000,
  }, async () => {
    const gates = { 'k#1': gate(), 'x#1': gate() };
    const { consumer, log, publish } = await start(gates);
    try {
      await publish('k1');
      expect(await until(() => log.starts.length === 1, 10_000)).toBe(true);
      await publish('k2'); // held behind k#1
      expect(await until(() => log.conflicts >= 1, 10_000)).toBe(true);
      expect(await until(() => log.reports.some(([seq]) => seq === 1), 10_000)).toBe(true);
      await publish('x'); // takes the slot k#1 left
      expect(await until(() => log.starts.length === 2, 10_000)).toBe(true);
      // k#1 ends, recorded and forgotten: k2's recheck waits for x's slot.
      gates['k#1'].open();
      expect(await until(() => log.busy === 1, 10_000)).toBe(true);
      await new Promise((resolve) => setTimeout(resolve, 200));
      const stopping = consumer.stop(10_000);
      expect(await until(() => log.naks.some(([body]) => body === 'k2'), 10_000)).toBe(true);
      gates['x#1'].open();
      await stopping;
      expect(log.starts.map(([run]) => run)).toEqual(['k#1', 'x#1']);
      // The run it was held on has ended (its key free): back for a delivery at once (the
      // pull's give-back delay), not after the lease of that run (10 s here).
      const delay = log.naks.find(([body]) => body === 'k2')?.[1] ?? 0;
      expect(delay, JSON.stringify(log)).toBeLessThanOrEqual(250);
    } finally {
      gates['k#1'].open();
      gates['x#1'].open();
      await consumer.stop(5_000);
    }
  });
});
