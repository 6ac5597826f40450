/**
 * Mutation audit (store-redis): "Every Redis failure ... is thrown as `StoreUnavailableError`
 * with the ioredis error as `cause`" (store contract rule 5), for every call. Only `acquire`
 * was checked against a Redis error: a `get` (or any other call) that let the session.raw ioredis
 * error through passed every test. Here each of the eight calls meets a record of an unknown
 * format (the scripts' own error reply) and a closed client.
 */
import { StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { owner, standaloneSession } from './mutaudit-helpers.js';
import { standalone } from './targets.js';

const LEASE = 30_000;
const RETENTION = 60_000;

const session = standaloneSession();

/** Every call of the store and its admin on storage key `key`. */
function everyCall(store: RedisStore, key: string): [string, () => Promise<unknown>][] {
  const w = { key, owner: owner(), retentionMs: RETENTION };
  return [
    ['acquire', () => store.acquire({ ...w, fingerprint: 'fp', leaseMs: LEASE })],
    ['complete', () => store.complete({ ...w, outcome: new Uint8Array([1]) })],
    ['release', () => store.release(w)],
    ['extend', () => store.extend({ ...w, leaseMs: LEASE })],
    ['get', () => store.get(key)],
    ['inspect', () => store.admin.inspect(key)],
    ['forceRelease', () => store.admin.forceRelease(key)],
    ['delete', () => store.admin.delete(key)],
  ];
}

async function expectUnavailable(what: string, run: () => Promise<unknown>, cause: RegExp) {
  const error = await run().then(
    (value) => new Error(`${what} answered ${JSON.stringify(value)}`),
    (e: unknown) => e,
  );
  expect(error, what).toBeInstanceOf(StoreUnavailableError);
  expect((error as StoreUnavailableError).code, what).toBe('STORE_UNAVAILABLE');
  expect((error as Error).cause, `${what}: cause`).toBeInstanceOf(Error);
  expect(String((error as Error).cause), `${what}: cause`).toMatch(cause);
}

describe('mutaudit: every call wraps Redis errors', () => {
  it('a record of an unknown format: each call fails with StoreUnavailableError, the reply as cause, nothing written', async () => {
    const store = createRedisStore({ client: session.client, keyPrefix: session.prefix() });
    await session.raw.set(store.redisKey('k'), 'not a record');
    for (const [what, run] of everyCall(store, 'k')) {
      await expectUnavailable(what, run, /unknown record format/);
    }
    expect(await session.raw.get(store.redisKey('k'))).toBe('not a record');
    expect(await session.raw.exists(store.fenceKey('k'))).toBe(0);
  });

  it('a closed client: each call fails with StoreUnavailableError, the client error as cause', async () => {
    const client = await standalone.connect();
    const store = createRedisStore({ client, keyPrefix: session.prefix() });
    client.disconnect();
    for (const [what, run] of everyCall(store, 'k')) {
      await expectUnavailable(what, run, /closed|writeable|enableOfflineQueue/i);
    }
  });
});
