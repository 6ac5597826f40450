/**
 * rev13 adversarial review: bad input to the Redis store's methods, to the recommended client
 * options and to the live-stream channel. Each must be refused with `InvalidInputError` before
 * anything is sent, not crash with a `TypeError` or quietly build something that cannot work.
 */
import { InvalidInputError, MAX_TIMER_MS } from '@idem/core';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createRedisLiveStreams,
  createRedisStore,
  recommendedRedisClusterOptions,
  recommendedRedisOptions,
} from '../src/index.js';
import { REDIS_URL } from './targets.js';

async function rejection(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('rev13: bad input', () => {
  let client: Redis;
  let blocking: Redis;
  beforeAll(async () => {
    client = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    blocking = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    client.on('error', () => {});
    blocking.on('error', () => {});
    await client.connect();
  });
  afterAll(() => {
    client?.disconnect();
    blocking?.disconnect();
  });

  // FIXED (was FINDING LOW; each method starts with checkObject): `store.acquire(null)` (and complete, release, extend with null or undefined)
  // rejects with a TypeError ("Cannot read properties of null (reading 'leaseMs')"), not the
  // typed InvalidInputError every other bad input gets (the memory store answers
  // "acquire needs an input object"). A caller branching on `code` sees no code. Reproduce:
  // createRedisStore({ client }).acquire(null). Fix: checkObject(call, input) first in each.
  it('a store method given no input object rejects with InvalidInputError', {
    timeout: 10_000,
  }, async () => {
    const store = createRedisStore({ client, keyPrefix: 'rev13-bad:' });
    for (const method of ['acquire', 'complete', 'release', 'extend'] as const) {
      for (const input of [null, undefined, 5]) {
        const error = await rejection(() => (store[method] as (x: unknown) => unknown)(input));
        expect(error, `${method}(${String(input)})`).toBeInstanceOf(InvalidInputError);
      }
    }
  });

  // FIXED (was FINDING LOW; src/client-options.ts checks both with checkTimerMs, and the input
  // with checkObject): recommendedRedisOptions / recommendedRedisClusterOptions accepted a
  // commandTimeoutMs above 2^31 - 1 ms (any safe integer). ioredis arms `commandTimeout`,
  // `socketTimeout` and `connectTimeout` with Node timers, and Node fires a longer timer after
  // 1 ms (TimeoutOverflowWarning): every socket is destroyed 1 ms after a write, so the
  // client never even finishes connecting ("Connection is closed"), and reconnects for ever.
  // Reproduce: new Redis({ ...recommendedRedisOptions({ commandTimeoutMs: 2 ** 31 }) }).ping().
  // `recommendedRedisOptions(null)` is a TypeError too. Fix: checkTimerMs (core's MAX_TIMER_MS),
  // and an options object check.
  it('recommended client options refuse a timeout past what Node timers honour, and a null input', () => {
    for (const make of [recommendedRedisOptions, recommendedRedisClusterOptions]) {
      expect(() => make({ commandTimeoutMs: MAX_TIMER_MS + 1 })).toThrow(InvalidInputError);
      expect(() => make({ maxReconnectDelayMs: MAX_TIMER_MS + 1 })).toThrow(InvalidInputError);
      expect(() => make(null as never)).toThrow(InvalidInputError);
      expect(make({ commandTimeoutMs: MAX_TIMER_MS }).enableOfflineQueue).toBe(false);
    }
  });

  // FIXED (was FINDING LOW; src/redis-live-streams.ts: checkObject, checkTimerMs for both and
  // their sum, checkStoreString for keyPrefix): createRedisLiveStreams accepted commandTimeoutMs and blockMs above what a
  // Node timer honours: its call gate arms `setTimeout(commandTimeoutMs)` and the waker
  // `setTimeout(blockMs + commandTimeoutMs)`, which then fire after 1 ms, so every call
  // "times out" at once (publishers give their generation up, readers end). It also accepts
  // a keyPrefix that is not a string (`{}` becomes "[object Object]" in every stream key), and
  // `createRedisLiveStreams()` / `(null)` is a TypeError. Fix: checkTimerMs for both (their sum
  // included), checkStoreString for keyPrefix, an options object check.
  it('createRedisLiveStreams refuses timer lengths Node does not honour, a non-string keyPrefix and no options', () => {
    const store = createRedisStore({ client, keyPrefix: 'rev13-bad:' });
    const base = { client, blockingClient: blocking, store };
    const bad: Record<string, unknown>[] = [
      { commandTimeoutMs: MAX_TIMER_MS + 1 },
      { blockMs: MAX_TIMER_MS + 1 },
      { blockMs: MAX_TIMER_MS - 10, commandTimeoutMs: 2_000 },
      { keyPrefix: {} },
      { keyPrefix: 5 },
    ];
    for (const options of bad) {
      expect(
        () => createRedisLiveStreams({ ...base, ...options } as never),
        JSON.stringify(options),
      ).toThrow(InvalidInputError);
    }
    expect(() => (createRedisLiveStreams as (x?: unknown) => unknown)()).toThrow(InvalidInputError);
    expect(() => (createRedisLiveStreams as (x?: unknown) => unknown)(null)).toThrow(
      InvalidInputError,
    );
  });
});
