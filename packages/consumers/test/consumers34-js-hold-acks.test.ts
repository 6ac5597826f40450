// consumers34: a JetStream duplicate held for a local run of its key (see consumers33) keeps
// its delivery alive with `working()` for as long as it is held: those calls must go on while
// the run runs (none stopped early: JetStream would redeliver it at ack_wait, spending
// max_deliver) and stop with the delivery's one final ack / nak / term (none after it: a
// `working()` after the ack is a protocol error at the server, and a timer left behind is a
// leak). Each delivery is told to `onMessage` once. On the real NATS JetStream and Redis.
import { createRedisStore } from '@idem/store-redis';
import { AckPolicy, type JsMsg } from 'nats';
import { describe, expect, it } from 'vitest';
import { consumeJetStream, type MessageStatus } from '../src/index.js';
import { jetStreamBed } from './brokers.js';
import { until } from './late-store.js';

const WORKING_MS = 100;

/** Every broker call on each delivery, in order (by delivery: stream sequence and count). */
function brokerCalls() {
  const calls = new Map<string, string[]>();
  const id = (m: JsMsg) => `${m.info.streamSequence}/${m.info.redeliveryCount}`;
  return {
    calls,
    /** Records `message`'s acks in place (the consumer calls them on this object). */
    watch(message: JsMsg) {
      if (calls.has(id(message))) return;
      const log: string[] = [];
      calls.set(id(message), log);
      for (const name of ['working', 'ack', 'nak', 'term'] as const) {
        const real = message[name].bind(message) as (...args: unknown[]) => void;
        (message as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
          log.push(name);
          real(...args);
        };
      }
    },
    /** What was called on a delivery after its first final call (ack, nak, term). */
    afterFinal(delivery: string): string[] {
      const log = calls.get(delivery) ?? [];
      const end = log.findIndex((c) => c !== 'working');
      return end < 0 ? ['(never settled)'] : log.slice(end + 1);
    },
  };
}

describe('consumers34: a held duplicate’s working() calls', () => {
  const bed = jetStreamBed('consumers34-js-hold-acks');

  async function setUp(label: string) {
    const { js, jsm, name } = await bed.stream();
    await jsm.consumers.add(name, {
      durable_name: 'w',
      ack_policy: AckPolicy.Explicit,
      ack_wait: 2_000 * 1_000_000,
    });
    const broker = brokerCalls();
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    let runs = 0;
    const reports: Array<[string, MessageStatus]> = [];
    const jsConsumer = await bed.nc.jetstream().consumers.get(name, 'w');
    // Each delivery's calls are watched from the moment the pull yields it.
    const consume = jsConsumer.consume.bind(jsConsumer);
    jsConsumer.consume = async (options) => {
      const messages = await consume(options);
      const iterate = messages[Symbol.asyncIterator].bind(messages);
      messages[Symbol.asyncIterator] = () => {
        const it = iterate();
        return {
          ...it,
          next: async () => {
            const step = await it.next();
            if (!step.done) broker.watch(step.value);
            return step;
          },
        };
      };
      return messages;
    };
    const consumer = await consumeJetStream({
      store: createRedisStore({ client: bed.redis, keyPrefix: `${bed.prefix}${label}:` }),
      consumer: jsConsumer,
      key: () => 'same',
      concurrency: 2,
      workingIntervalMs: WORKING_MS,
      leaseMs: 10_000,
      handler: async () => {
        runs += 1;
        await gate;
        return 'done';
      },
      onMessage: ({ message, status }) =>
        reports.push([`${message.info.streamSequence}/${message.info.redeliveryCount}`, status]),
    });
    await js.publish(`${name}.orders`, 'same');
    expect(await until(() => runs === 1, 10_000)).toBe(true);
    // A publisher's resend: held behind the local run.
    await js.publish(`${name}.orders`, 'same');
    expect(await until(() => broker.calls.has('2/1'), 10_000)).toBe(true);
    return { broker, open, consumer, reports, runs: () => runs };
  }

  it('sent while the run runs, none after the held delivery is acked as a replay', {
    timeout: 20_000,
  }, async () => {
    const { broker, open, consumer, reports, runs } = await setUp('a');
    try {
      // Held for several intervals: working() goes on all along (not stopped early).
      expect(await until(() => (broker.calls.get('2/1') ?? []).length >= 5, 10_000)).toBe(true);
      expect(broker.calls.get('2/1')?.every((c) => c === 'working')).toBe(true);
      open();
      expect(await until(() => reports.length === 2, 10_000)).toBe(true);
      // A few intervals after both settled: nothing more on either delivery.
      await new Promise((resolve) => setTimeout(resolve, 4 * WORKING_MS));
      expect(broker.afterFinal('1/1')).toEqual([]);
      expect(broker.afterFinal('2/1')).toEqual([]);
      expect(broker.calls.get('1/1')?.at(-1)).toBe('ack');
      expect(broker.calls.get('2/1')?.at(-1)).toBe('ack');
      // One report per delivery.
      expect([...reports].sort()).toEqual([
        ['1/1', 'processed'],
        ['2/1', 'replayed'],
      ]);
    } finally {
      open();
      await consumer.stop(5_000);
    }
    expect(runs()).toBe(1);
  });

  it('stop() while held: given back once, no working() after; the run acks and stops too', {
    timeout: 20_000,
  }, async () => {
    const { broker, open, consumer, reports, runs } = await setUp('b');
    let stopped = false;
    try {
      expect(await until(() => (broker.calls.get('2/1') ?? []).length >= 2, 10_000)).toBe(true);
      const stopping = consumer.stop(10_000).then(() => {
        stopped = true;
      });
      // The held delivery goes back (nak) once the pull has ended, the run still running.
      expect(await until(() => broker.calls.get('2/1')?.includes('nak') === true, 10_000)).toBe(
        true,
      );
      expect(stopped).toBe(false);
      open();
      await stopping;
      await new Promise((resolve) => setTimeout(resolve, 4 * WORKING_MS));
      expect(broker.afterFinal('1/1')).toEqual([]);
      expect(broker.afterFinal('2/1')).toEqual([]);
      expect(broker.calls.get('1/1')?.at(-1)).toBe('ack');
      expect([...reports].sort()).toEqual([
        ['1/1', 'processed'],
        ['2/1', 'in_progress'],
      ]);
    } finally {
      open();
      await consumer.stop(5_000);
    }
    expect(runs()).toBe(1);
  });
});
