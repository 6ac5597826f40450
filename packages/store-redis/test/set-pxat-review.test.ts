import { randomBytes } from 'node:crypto';
import { StoreFullError } from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import { connectPort } from './targets.js';

// acquire and complete write the record with one SET ... PXAT on Redis 7+: the key's expiry
// must be exactly the record's (expiresAt - 1), and a full Redis (noeviction) must still
// take the completion of a key already held.

const servers: RedisServer[] = [];
const clients: Redis[] = [];
afterAll(async () => {
  for (const client of clients) client.disconnect();
  await Promise.all(servers.map(stopRedisServer));
});

async function serverWith(args: string[]): Promise<Redis> {
  const server = await startRedisServer(args);
  servers.push(server);
  const client = await connectPort(server.port);
  clients.push(client);
  return client;
}

describe.skipIf(!redisBinariesAvailable())('SET ... PXAT (review)', () => {
  it('the key expires exactly when the record does, after acquire and after complete', async () => {
    const client = await serverWith([]);
    const store = createRedisStore({ client });
    const key = randomBytes(8).toString('hex');
    const acquired = await store.acquire({
      key,
      fingerprint: 'f',
      owner: 'o1',
      leaseMs: 5_000,
      retentionMs: 60_000,
    });
    expect(acquired.kind).toBe('acquired');
    const redisKey = store.redisKey(key);
    const held = await store.get(key);
    expect(Number(await client.call('PEXPIRETIME', redisKey))).toBe(held!.expiresAt - 1);
    expect(
      await store.complete({
        key,
        owner: 'o1',
        outcome: new Uint8Array(100),
        retentionMs: 3_600_000,
      }),
    ).toMatchObject({ ok: true });
    const done = await store.get(key);
    expect(done!.status).toBe('completed');
    expect(Number(await client.call('PEXPIRETIME', redisKey))).toBe(done!.expiresAt - 1);
    expect(done!.expiresAt - Date.now()).toBeGreaterThan(3_500_000);
  });

  it('a full Redis (noeviction) refuses new records but still takes a held key’s completion', async () => {
    const client = await serverWith(['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction']);
    const store = createRedisStore({ client });
    const key = randomBytes(8).toString('hex');
    const input = { fingerprint: 'f', leaseMs: 30_000, retentionMs: 60_000 };
    expect((await store.acquire({ key, owner: 'o1', ...input })).kind).toBe('acquired');
    // Fill it until a write is refused.
    let full = false;
    for (let i = 0; i < 5_000 && !full; i++) {
      await client.set(`filler:${i}`, 'x'.repeat(4_000)).catch((error: unknown) => {
        expect(String(error)).toMatch(/OOM/);
        full = true;
      });
    }
    expect(full).toBe(true);
    // Redis judges "full" per command from its memory at that moment, which moves a little
    // (client buffers): a small record may still fit right after a 4 KB filler was refused.
    // So: new records until one is refused, with another filler between tries (bounded).
    let refused: unknown;
    for (let i = 0; i < 50 && refused === undefined; i++) {
      await store
        .acquire({ key: randomBytes(8).toString('hex'), owner: 'o2', ...input })
        .catch((error: unknown) => {
          refused = error;
        });
      if (refused === undefined) await client.set(`more:${i}`, 'x'.repeat(4_000)).catch(() => {});
    }
    expect(refused).toBeInstanceOf(StoreFullError);
    expect(
      await store.complete({
        key,
        owner: 'o1',
        outcome: new Uint8Array(1_000),
        retentionMs: 60_000,
      }),
    ).toMatchObject({ ok: true });
    const done = await store.get(key);
    expect(done!.status).toBe('completed');
    expect(Number(await client.call('PEXPIRETIME', store.redisKey(key)))).toBe(done!.expiresAt - 1);
  });
});
