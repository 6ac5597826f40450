// conslate2: the JetStream loop's wait for a free handler slot. It raced the tasks in flight
// (`Promise.race(inFlight)`) at every message once the slots were full, and each race left a
// reaction on every task still running: a handler that runs long (up to `maxHoldMs`, an hour
// by default) kept one per message the other slots took meanwhile (about 450 B each: 23 MB for
// the 50k messages measured here). Now the task that frees a slot wakes the loop.
// A fake pull (test/fake-jetstream.ts) feeds the messages; they are keyless, so each is
// terminated at once without a store call, while message 1's handler runs throughout.
//
// Counted, not weighed (ci34): the promises alive after full collections (v8.queryObjects).
// Each race kept is a promise kept a message: 3,000 messages show it (the heap delta needed
// 60,000, 129 s in a loaded CI lane). IDEM_CONSUMERS_JETSTREAM_MESSAGES sizes the run.
import { createRedisStore } from '@idem/store-redis';
import { expect, it } from 'vitest';
import { consumeJetStream, type JsMsgLike } from '../src/index.js';
import { redisBed } from './brokers.js';
import { fakeMessages } from './fake-jetstream.js';
import { promisesAlive } from './heap.js';
import { until } from './late-store.js';

const MESSAGES = Number(process.env.IDEM_CONSUMERS_JETSTREAM_MESSAGES ?? 3_000);

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
  timeout: 120_000,
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
    // Warm-up: what the loop and the processor allocate once is not counted.
    const warmUp = 500;
    for (let i = 0; i < warmUp; i++) push(jsMessage(2 + i, counts));
    expect(await until(() => counts.term === warmUp, 60_000)).toBe(true);
    const before = await promisesAlive();
    for (let i = 0; i < MESSAGES; i++) push(jsMessage(2 + warmUp + i, counts));
    expect(await until(() => counts.term === warmUp + MESSAGES, 60_000)).toBe(true);
    const kept = (await promisesAlive(before)) - before;
    // Checked (Node 20.20): with the loop's wait put back to `await Promise.race(inFlight)`
    // (the conslate2 leak), every message keeps its race: fails. A quarter of one a message is
    // the bound.
    expect(kept, JSON.stringify({ messages: MESSAGES, kept })).toBeLessThan(MESSAGES / 4);
    expect(consumer.inFlight).toBe(1);
  } finally {
    release();
    await consumer.stop(5_000);
  }
});
