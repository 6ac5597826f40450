/**
 * Guard: the shared XREAD round never makes a reader wait for its block. A reader that starts
 * waiting while a round that does not cover its stream has just been sent (its XREAD written,
 * the CLIENT UNBLOCK following on the other connection a few microtasks later) is woken by
 * the next entry all the same. Measured against a deliberately long block (5 s) so a missed
 * wake-up shows as seconds, not milliseconds. (Redis serves the two connections in the order
 * the commands arrived, so the UNBLOCK is not lost here; a round queued while the blocking
 * connection reconnects could still miss it: that reader waits one block at most.)
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallGate } from '../src/redis-live-streams.js';
import { XReadWaker } from '../src/xread-waker.js';
import { REDIS_URL } from './targets.js';

const prefix = `idem-live-wake:${randomBytes(6).toString('hex')}:`;
let client: Redis;
let blocking: Redis;

beforeAll(async () => {
  client = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  await client.ping();
  blocking = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  await blocking.ping();
});
afterAll(async () => {
  const keys = await client.keys(`${prefix}*`);
  if (keys.length > 0) await client.del(...keys);
  client.disconnect();
  blocking.disconnect();
});

const BLOCK_MS = 5_000;

describe('XReadWaker', () => {
  it('wakes a reader that starts waiting just as a round without its stream goes out, not after the block', async () => {
    const waker = new XReadWaker(client, blocking, BLOCK_MS, 2_000, new CallGate(2_000));
    const internal = waker as unknown as { inRound: boolean; idOfBlocking(): Promise<unknown> };
    // The round's first step (CLIENT ID of the blocking connection) done once, beforehand.
    await internal.idOfBlocking();
    const quiet = `${prefix}quiet`;
    let quietId = String(await client.xadd(quiet, '*', 'k', 'h'));
    const slowest: number[] = [];
    for (let i = 0; i < 12; i++) {
      const key = `${prefix}busy:${i}`;
      const id = String(await client.xadd(key, '*', 'k', 'h'));
      // A round on the quiet stream alone goes out (its XREAD written in a microtask)...
      const quietWoken = waker.wait(quiet, quietId, BLOCK_MS * 2);
      for (let spin = 0; spin < 100 && !internal.inRound; spin++) await Promise.resolve();
      expect(internal.inRound).toBe(true);
      // ...and at once, before it blocks at Redis, a reader waits on another stream.
      const started = performance.now();
      const woken = waker.wait(key, id, BLOCK_MS * 2);
      await new Promise((resolve) => setTimeout(resolve, 20));
      await client.xadd(key, '*', 'k', 'c');
      await woken;
      slowest.push(performance.now() - started);
      // The quiet stream's waiter ends too, and with it the loop: the next round is a fresh one.
      quietId = String(await client.xadd(quiet, '*', 'k', 'c'));
      await quietWoken;
    }
    // Without a wake-up that survives the race each missed one costs the whole 5 s block.
    expect(Math.max(...slowest)).toBeLessThan(BLOCK_MS / 2);
  });

  it('wakes a reader whose CLIENT UNBLOCK reached Redis before the round it meant to end', async () => {
    // The blocking connection's XREAD leaves 50 ms late, so the UNBLOCK that a new reader
    // sends finds nothing blocked (answers 0). Before the retry, that reader waited out the
    // whole 5 s block.
    const late = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
    await late.ping();
    const xread = late.xread.bind(late) as (...args: unknown[]) => Promise<unknown>;
    (late as unknown as { xread: (...args: unknown[]) => Promise<unknown> }).xread = (
      ...args: unknown[]
    ) => new Promise((resolve) => setTimeout(resolve, 50)).then(() => xread(...args));
    try {
      const waker = new XReadWaker(client, late, BLOCK_MS, 2_000, new CallGate(2_000));
      const internal = waker as unknown as { inRound: boolean };
      const quiet = `${prefix}late-quiet`;
      const quietId = String(await client.xadd(quiet, '*', 'k', 'h'));
      const key = `${prefix}late-busy`;
      const id = String(await client.xadd(key, '*', 'k', 'h'));
      const quietWoken = waker.wait(quiet, quietId, BLOCK_MS * 2);
      for (let spin = 0; spin < 1_000 && !internal.inRound; spin++) await sleepMs(1);
      expect(internal.inRound).toBe(true);
      const started = performance.now();
      const woken = waker.wait(key, id, BLOCK_MS * 2);
      await sleepMs(150);
      await client.xadd(key, '*', 'k', 'c');
      await woken;
      const took = performance.now() - started;
      await client.xadd(quiet, '*', 'k', 'c');
      await quietWoken;
      expect(took).toBeLessThan(BLOCK_MS / 2);
    } finally {
      late.disconnect();
    }
  });
});

function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
