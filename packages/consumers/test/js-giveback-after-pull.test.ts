// A message given back because stop() came before its handler started (its key function still
// pending) is `nak`ed only once the pull's subscription has ended: a `nak` sent while the pull
// is still open can have the server redeliver the message to that very pull, which then drops
// it (ack-pending until ack_wait, 30 s here). rev13fix-jetstream-stop saw message #2 of 8 not
// come back within 15 s in 1 run of 6 once such give-backs were sent at once.
import { setTimeout as sleep } from 'node:timers/promises';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { consumeJetStream } from '../src/index.js';
import { durableStream, jetStreamBed } from './brokers.js';

type Msg = { data: Uint8Array; nak(ms?: number): void };

describe('JetStream: a give-back at stop waits for the pull to end', () => {
  const bed = jetStreamBed('js-giveback');

  it('the message whose key was still pending at stop() is naked after the pull ended, and a second instance runs it once', {
    timeout: 40_000,
  }, async () => {
    const js = bed.nc.jetstream();
    const stream = await durableStream(bed.nc, 'JSGIVEBACK', bed.streams, {
      ackWaitMs: 30_000,
      count: 2,
    });
    const store = createRedisStore({ client: bed.redis, keyPrefix: bed.prefix });
    const numberOf = (message: Msg) =>
      (JSON.parse(Buffer.from(message.data).toString()) as { n: number }).n;
    // The moment the pull's iteration ended, and each nak with whether it had ended by then.
    let pullEnded = false;
    const naks: Array<{ n: number; afterPull: boolean }> = [];
    const watched = (consumer: { consume(options: unknown): Promise<object> }) =>
      new Proxy(consumer, {
        get(target, name, receiver) {
          if (name !== 'consume') return Reflect.get(target, name, receiver);
          return async (options: unknown) => {
            const messages = await target.consume(options);
            return new Proxy(messages, {
              get(inner, prop) {
                if (prop !== Symbol.asyncIterator) {
                  const value = Reflect.get(inner, prop, inner);
                  return typeof value === 'function' ? value.bind(inner) : value;
                }
                return () => {
                  const iterator = (inner as AsyncIterable<Msg>)[Symbol.asyncIterator]();
                  return {
                    async next() {
                      const step = await iterator.next();
                      if (step.done) pullEnded = true;
                      else {
                        const message = step.value;
                        const nak = message.nak.bind(message);
                        message.nak = (ms?: number) => {
                          naks.push({ n: numberOf(message), afterPull: pullEnded });
                          nak(ms);
                        };
                      }
                      return step;
                    },
                    return: iterator.return?.bind(iterator),
                  };
                };
              },
            });
          };
        },
      });
    let stopCalled!: () => void;
    const stopping = new Promise<void>((resolve) => {
      stopCalled = resolve;
    });
    const runs = new Map<number, number>();
    let firstStarted!: () => void;
    const started = new Promise<void>((resolve) => {
      firstStarted = resolve;
    });
    const first = await consumeJetStream({
      store,
      consumer: watched(await js.consumers.get(stream, 'w')) as never,
      concurrency: 2,
      // Message 2's key answers only once stop() was called: its handler must not start.
      key: async (message: Msg) => {
        const n = numberOf(message);
        if (n === 2) await stopping;
        return `order-${n}`;
      },
      handler: async (message: Msg) => {
        const n = numberOf(message);
        runs.set(n, (runs.get(n) ?? 0) + 1);
        if (n === 1) {
          firstStarted();
          await sleep(300);
        }
        return n;
      },
    } as never);
    await started;
    const stopped = first.stop(10_000);
    stopCalled();
    await stopped;
    expect(runs.get(2)).toBeUndefined();
    expect(naks.filter(({ n }) => n === 2)).toEqual([{ n: 2, afterPull: true }]);
    const second = await consumeJetStream({
      store,
      consumer: await js.consumers.get(stream, 'w'),
      key: (message: Msg) => `order-${numberOf(message)}`,
      handler: async (message: Msg) => {
        const n = numberOf(message);
        runs.set(n, (runs.get(n) ?? 0) + 1);
        return n;
      },
    } as never);
    const end = performance.now() + 10_000;
    while (performance.now() < end && runs.size < 2) await sleep(25);
    await second.stop(5_000);
    expect([...runs.entries()].sort((a, b) => a[0] - b[0])).toEqual([
      [1, 1],
      [2, 1],
    ]);
  });
});
