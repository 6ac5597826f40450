// rev33a (review of the consumers33 merge f9c5900d): JetStream duplicates held behind a run of
// the same consumer (re-checked when it ends). Attacks: stop() while held, a burst of
// duplicates racing the end of the run, the broker's consumer deleted and created again while
// held. Each time: the handler runs once, every delivery gets one report, no message is left
// unacked, the held ones never hold more than `concurrency` beside the running slots. On the
// real NATS JetStream and Redis.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageStatus } from '../src/index.js';
import { jetStreamBed } from './brokers.js';
import { until } from './late-store.js';

describe('rev33a: JetStream duplicates held behind a local run', () => {
  const bed = jetStreamBed('rev33a-js-held');

  /** Waits until the consumer has nothing pending nor unacked (20 s at most); answers its info. */
  async function drained(stream: string) {
    const jsm = await bed.nc.jetstreamManager();
    let info = await jsm.consumers.info(stream, 'w');
    for (let i = 0; i < 200 && info.num_ack_pending + info.num_pending > 0; i++) {
      await sleep(100);
      info = await jsm.consumers.info(stream, 'w');
    }
    return info;
  }

  /** A gate the handler waits at; `open()` lets it through. */
  function gate() {
    let open: () => void = () => {};
    const closed = new Promise<void>((resolve) => {
      open = resolve;
    });
    return { closed, open };
  }

  it('stop() while a duplicate is held: it goes back, the run acks, the next consumer replays it', {
    timeout: 60_000,
  }, async () => {
    const { jsm, js, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    await js.publish(`${name}.a`, 'same');
    const store = createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}stop:` });
    const first = gate();
    let runs = 0;
    let conflicts = 0;
    const reports: Array<[number, MessageStatus]> = [];
    const options = {
      store,
      key: () => 'same',
      leaseMs: 2_000,
      onMessage: ({ message, status }: { message: JsMsg; status: MessageStatus }) =>
        reports.push([message.info.streamSequence, status]),
    };
    const consumer = await consumeJetStream({
      ...options,
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      concurrency: 2,
      handler: async () => {
        runs += 1;
        await first.closed;
        return 'done';
      },
      onEvent: (event) => {
        if (event.type === 'conflict') conflicts += 1;
      },
    });
    let second: Awaited<ReturnType<typeof consumeJetStream>> | undefined;
    try {
      expect(await until(() => runs === 1, 10_000)).toBe(true);
      await js.publish(`${name}.a`, 'same'); // the publisher's resend
      expect(await until(() => conflicts === 1, 10_000)).toBe(true);
      // Held (no report yet): stop() now, the run ends while stop() waits for it.
      expect(reports).toEqual([]);
      const stopping = consumer.stop(10_000);
      await sleep(300);
      first.open();
      await stopping;
      expect(reports).toEqual([
        [2, 'in_progress'],
        [1, 'processed'],
      ]);
      // Another consumer of the same durable takes the resend (nak'ed with its delay): a replay.
      second = await consumeJetStream({
        ...options,
        consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
        handler: async () => {
          runs += 1;
          return 'again';
        },
      });
      const info = await drained(name);
      expect([info.num_ack_pending, info.num_pending]).toEqual([0, 0]);
      expect(reports).toEqual([
        [2, 'in_progress'],
        [1, 'processed'],
        [2, 'replayed'],
      ]);
    } finally {
      first.open();
      await consumer.stop(5_000);
      await second?.stop(5_000);
    }
    expect(runs).toBe(1);
  });

  it('stop() in the same turn as the run ends, duplicates held: one run, nothing lost', {
    timeout: 60_000,
  }, async () => {
    const { jsm, js, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    await js.publish(`${name}.a`, 'same');
    const store = createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}race:` });
    const first = gate();
    let runs = 0;
    let conflicts = 0;
    const options = { store, key: () => 'same', leaseMs: 1_500, retryDelayMs: 100 };
    const consumer = await consumeJetStream({
      ...options,
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      concurrency: 2,
      handler: async () => {
        runs += 1;
        await first.closed;
        return 'done';
      },
      onEvent: (event) => {
        if (event.type === 'conflict') conflicts += 1;
      },
    });
    let second: Awaited<ReturnType<typeof consumeJetStream>> | undefined;
    try {
      expect(await until(() => runs === 1, 10_000)).toBe(true);
      await js.publish(`${name}.a`, 'same');
      await js.publish(`${name}.a`, 'same');
      expect(await until(() => conflicts === 2, 10_000)).toBe(true);
      // The run ends and stop() is called in the same turn: each hold ends either way (the
      // run's end, a recheck then, or stop()'s give-back).
      first.open();
      await consumer.stop(10_000);
      second = await consumeJetStream({
        ...options,
        consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
        handler: async () => {
          runs += 1;
          return 'again';
        },
      });
      const info = await drained(name);
      expect([info.num_ack_pending, info.num_pending]).toEqual([0, 0]);
    } finally {
      first.open();
      await consumer.stop(5_000);
      await second?.stop(5_000);
    }
    expect(runs).toBe(1);
  });

  it('a burst of duplicates racing the end of the run: one run, all acked, holds bounded', {
    timeout: 90_000,
  }, async () => {
    const { jsm, js, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    await js.publish(`${name}.a`, 'same');
    const first = gate();
    let runs = 0;
    const reports = new Map<number, MessageStatus[]>();
    const concurrency = 3;
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}burst:` }),
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      key: () => 'same',
      concurrency,
      leaseMs: 1_500,
      retryDelayMs: 100,
      handler: async () => {
        runs += 1;
        await first.closed;
        return 'done';
      },
      onMessage: ({ message, status }) => {
        const seq = message.info.streamSequence;
        reports.set(seq, [...(reports.get(seq) ?? []), status]);
      },
    });
    let most = 0;
    const sampler = setInterval(() => {
      most = Math.max(most, consumer.inFlight);
    }, 5);
    const resends = 40;
    try {
      expect(await until(() => runs === 1, 10_000)).toBe(true);
      // Resends before, at and after the run's end.
      const published: Promise<unknown>[] = [];
      for (let n = 0; n < resends; n++) {
        if (n === resends / 2) first.open();
        published.push(js.publish(`${name}.a`, 'same'));
        if (n % 5 === 0) await sleep(5);
      }
      await Promise.all(published);
      const info = await drained(name);
      expect([info.num_ack_pending, info.num_pending]).toEqual([0, 0]);
      // Each message's last report is a final one: processed for the first, replayed for the rest.
      const last = [...reports.entries()].map(([seq, statuses]) => [seq, statuses.at(-1)]);
      expect(last.length).toBe(resends + 1);
      expect(last.filter(([, status]) => status === 'processed')).toEqual([[1, 'processed']]);
      expect(last.filter(([, status]) => status === 'replayed').length).toBe(resends);
      // Held ones beside the running slots: never more than `concurrency` of them.
      expect(most).toBeLessThanOrEqual(2 * concurrency);
    } finally {
      clearInterval(sampler);
      first.open();
      await consumer.stop(5_000);
    }
    expect(runs).toBe(1);
  });

  it('the broker’s consumer deleted and created again while a duplicate is held: one run, all acked', {
    timeout: 90_000,
  }, async () => {
    const { jsm, js, name } = await bed.stream();
    await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
    await js.publish(`${name}.a`, 'same');
    const first = gate();
    let runs = 0;
    let conflicts = 0;
    const statuses: string[] = [];
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}recreate:` }),
      consumer: await bed.nc.jetstream().consumers.get(name, 'w'),
      key: () => 'same',
      concurrency: 2,
      leaseMs: 2_000,
      expiresMs: 1_000,
      handler: async () => {
        runs += 1;
        await first.closed;
        return 'done';
      },
      onEvent: (event) => {
        if (event.type === 'conflict') conflicts += 1;
      },
      onConsumerStatus: (s) => statuses.push(s.type),
    });
    try {
      expect(await until(() => runs === 1, 10_000)).toBe(true);
      await js.publish(`${name}.a`, 'same');
      expect(await until(() => conflicts === 1, 10_000)).toBe(true);
      await jsm.consumers.delete(name, 'w');
      expect(await until(() => statuses.includes('lost'), 10_000)).toBe(true);
      await jsm.consumers.add(name, { durable_name: 'w', ack_policy: AckPolicy.Explicit });
      // The new consumer delivers both again: the key is still held by the run here.
      expect(await until(() => conflicts >= 2, 15_000)).toBe(true);
      first.open();
      const info = await drained(name);
      expect([info.num_ack_pending, info.num_pending]).toEqual([0, 0]);
      expect(statuses).toEqual(['lost', 'resumed']);
    } finally {
      first.open();
      await consumer.stop(5_000);
    }
    expect(runs).toBe(1);
  });
});
