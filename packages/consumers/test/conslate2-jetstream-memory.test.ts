// conslate2: the JetStream loop's wait for a free handler slot. It raced the tasks in flight
// (`Promise.race(inFlight)`) at every message once the slots were full, and each race left a
// reaction on every task still running: a handler that runs long (up to `maxHoldMs`, an hour
// by default) kept one per message the other slots took meanwhile (about 450 B each: 23 MB for
// the 50k messages measured here). Now the task that frees a slot wakes the loop.
// A fake pull (test/fake-jetstream.ts) feeds the messages; they are keyless, so each is
// terminated at once without a store call, while message 1's handler runs throughout.
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import { consumeJetStream, type JsMsgLike } from '../src/index.js';
import { redisBed } from './brokers.js';
import { fakeMessages } from './fake-jetstream.js';
import { heapAfterGc } from './heap.js';
import { until } from './late-store.js';

const { redis, prefix } = redisBed('conslate2-memory');

/** A message; `counts.term` counts the terminated ones. */
const jsMessage = (seq: number, counts: { term: number }): JsMsgLike => ({
  data: new TextEncoder().encode(`{"n":${seq}}`),
  seq,
  info: { stream: 'S', consumer: 'w', streamSequence: seq, redeliveryCount: 1 },
  ack() {},
  nak() {},
  working() {},
  term() {
    counts.term += 1;
  },
});

it('messages taken beside a long-running handler leave nothing behind', {
  timeout: 900_000,
}, async () => {
  const { messages, push } = fakeMessages(undefined);
  const counts = { term: 0 };
  let release!: () => void;
  const longRun = new Promise<void>((resolve) => {
    release = resolve;
  });
  let started = false;
  const consumer = await consumeJetStream({
    store: createRedisStore({ client: redis, keyPrefix: prefix }),
    consumer: { consume: async () => messages as never },
    concurrency: 2,
    // Message 1 has a key and runs until the test ends; every other one has none.
    key: (message: JsMsgLike) => (message.seq === 1 ? `${prefix}long` : undefined),
    handler: async () => {
      started = true;
      await longRun;
      return 'done';
    },
  });
  try {
    push(jsMessage(1, counts));
    expect(await until(() => started)).toBe(true);
    const batch = 10_000;
    const batches = 6;
    // One batch first: what the loop and the processor allocate once is not counted.
    for (let i = 0; i < batch; i++) push(jsMessage(2 + i, counts));
    expect(await until(() => counts.term === batch, 120_000)).toBe(true);
    const before = await heapAfterGc();
    for (let b = 1; b < batches; b++) {
      for (let i = 0; i < batch; i++) push(jsMessage(2 + b * batch + i, counts));
      expect(await until(() => counts.term === (b + 1) * batch, 120_000)).toBe(true);
    }
    const grown = (await heapAfterGc()) - before;
    // 23 MB for these 50k messages before the fix; about 55 kB after it.
    expect(grown).toBeLessThan(8_000_000);
    expect(consumer.inFlight).toBe(1);
  } finally {
    release();
    await consumer.stop(5_000);
  }
});
