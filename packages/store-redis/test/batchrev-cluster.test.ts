/**
 * Adversarial review of write batching on a Cluster (a private 3-primary one: the test moves
 * slots and destroys node connections): more than WRITE_BATCH_MAX script calls a tick across
 * primaries while a node's corked stream is destroyed, and while a slot moves (MOVED).
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency, deriveStorageKey } from '@idem/core';
import { Cluster, type Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisClusterOptions } from '../src/index.js';
import { type Outcome, timed } from './batchrev-timed.js';
import {
  moveSlot,
  type RedisServer,
  redisBinariesAvailable,
  startCluster,
  stopRedisServer,
} from './redis-servers.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const corked = (node: Redis) =>
  (node.stream as unknown as { writableCorked?: number } | undefined)?.writableCorked ?? 0;

/** CRC16/XMODEM, Redis Cluster's key hash. */
function crc16(text: string): number {
  let crc = 0;
  for (const byte of Buffer.from(text)) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}
/** The slot of a store key: its storage key is the hash tag (`prefix{storageKey}`). */
const slotOf = (key: string) => crc16(deriveStorageKey(null, key)) & 16383;

/** `count` keys that all hash to one slot. */
function keysInOneSlot(count: number): string[] {
  const tag = randomBytes(3).toString('hex');
  const slot = slotOf(`m-${tag}-0`);
  const keys = [`m-${tag}-0`];
  for (let i = 1; keys.length < count; i++)
    if (slotOf(`m-${tag}-${i}`) === slot) keys.push(`m-${tag}-${i}`);
  return keys;
}

describe.skipIf(!redisBinariesAvailable())('batchrev: batching on a Cluster under faults', () => {
  let servers: RedisServer[] = [];
  let client: Cluster;

  beforeAll(async () => {
    servers = await startCluster(3);
    client = new Cluster(
      servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
      { ...recommendedRedisClusterOptions({ commandTimeoutMs: 1_000 }), lazyConnect: true },
    );
    client.on('error', () => {});
    await client.connect();
    await Promise.all(client.nodes('master').map((n) => n.ping()));
  });
  afterAll(async () => {
    client?.disconnect();
    await Promise.all(servers.map(stopRedisServer));
  });

  it("64 calls a tick over 3 primaries, one primary's stream destroyed after its 6th script of the tick (while corked): all settle, none twice, nothing stays corked", async () => {
    const store = createRedisStore({ client, keyPrefix: `brc:${randomBytes(4).toString('hex')}:` });
    const idem = createIdempotency<string>({ store, heartbeatMs: false, leaseMs: 30_000 });
    const runs = new Map<string, number>();
    const victim = client.nodes('master')[1] as Redis;
    const original = victim.sendCommand.bind(victim) as (...args: unknown[]) => unknown;
    let scripts = 0;
    let corkedAtDestroy = -1;
    const wrapped = (...args: unknown[]) => {
      const result = original(...args);
      const name = (args[0] as { name: string }).name;
      if ((name === 'evalsha' || name === 'eval') && ++scripts === 6) {
        corkedAtDestroy = corked(victim);
        victim.stream.destroy();
      }
      return result;
    };
    (victim as unknown as { sendCommand: unknown }).sendCommand = wrapped;
    const keys = Array.from({ length: 64 }, (_, i) => `c-k${i}`);
    const op = (key: string, value: string) => () =>
      idem.execute({ key }, async () => {
        runs.set(key, (runs.get(key) ?? 0) + 1);
        return value;
      });
    const first = await Promise.all(keys.map((k) => timed(k, 10_000, op(k, `v-${k}`))));
    (victim as unknown as { sendCommand: unknown }).sendCommand = original;
    await sleep(1_000);
    const second = await Promise.all(keys.map((k) => timed(k, 10_000, op(k, 'again'))));
    const twice = [...runs.entries()].filter(([, n]) => n > 1);
    console.log(
      `[batchrev cluster destroy] victimScripts=${scripts} corkedAtDestroy=${corkedAtDestroy} first ok=${first.filter((o) => o.ok).length} ` +
        `errors=${first.filter((o) => !o.ok).length} second replayed=${second.filter((o) => o.replayed).length} twice=${twice.length} ` +
        `maxMs=${Math.max(...first.map((o) => o.ms), ...second.map((o) => o.ms))}`,
    );
    expect(corkedAtDestroy).toBe(1);
    expect([...first, ...second].filter((o) => o.error === 'HUNG')).toEqual([]);
    expect(twice).toEqual([]);
    for (const o of first) {
      if (o.ok)
        expect(second.find((s) => s.key === o.key)).toMatchObject({
          ok: true,
          replayed: true,
          value: `v-${o.key}`,
        });
    }
    expect(client.nodes('master').map(corked)).toEqual([0, 0, 0]);
  });

  it('48 calls a tick, a third of them in a slot that moves mid-load (MOVED): none twice, all settle, acknowledged outcomes replay', async () => {
    // The "m" keys all share one slot (the one that moves); the others spread out.
    const pool = keysInOneSlot(32);
    const movedStore = createRedisStore({
      client,
      keyPrefix: `brm:${randomBytes(4).toString('hex')}:`,
    });
    const spreadStore = createRedisStore({
      client,
      keyPrefix: `brs:${randomBytes(4).toString('hex')}:`,
    });
    const moved = createIdempotency<string>({
      store: movedStore,
      heartbeatMs: false,
      leaseMs: 30_000,
    });
    const spread = createIdempotency<string>({
      store: spreadStore,
      heartbeatMs: false,
      leaseMs: 30_000,
    });
    const runs = new Map<string, number>();
    const outcomes: Outcome[] = [];
    let stop = false;
    let round = 0;
    const load = (async () => {
      while (!stop) {
        round++;
        const calls = Array.from({ length: 48 }, (_, i) => {
          const which = i % 3 === 0 ? moved : spread;
          // 2 callers per key; the slot's keys come round again (first runs, then replays).
          const key =
            i % 3 === 0
              ? (pool[(round * 8 + Math.floor(i / 6)) % pool.length] as string)
              : `s-${round}-${i >> 1}`;
          const id = `${i % 3 === 0 ? 'm' : 's'}:${key}`;
          return timed(id, 10_000, () =>
            which.execute({ key }, async () => {
              runs.set(id, (runs.get(id) ?? 0) + 1);
              return `v-${id}`;
            }),
          );
        });
        outcomes.push(...(await Promise.all(calls)));
      }
    })();
    await sleep(300);
    const slotKey = movedStore.redisKey(deriveStorageKey(null, pool[0] as string));
    await moveSlot(servers, slotKey);
    await sleep(300);
    await moveSlot(servers, slotKey);
    await sleep(300);
    stop = true;
    await load;
    const acked = outcomes.filter((o) => o.ok && o.replayed === false);
    const again = await Promise.all(
      acked.map((o) => {
        const [kind, key] = [o.key.slice(0, 1), o.key.slice(2)];
        return timed(o.key, 10_000, () =>
          (kind === 'm' ? moved : spread).execute({ key }, async () => {
            runs.set(o.key, (runs.get(o.key) ?? 0) + 1);
            return 'second';
          }),
        );
      }),
    );
    const twice = [...runs.entries()].filter(([, n]) => n > 1);
    const errors = new Map<string, number>();
    for (const o of outcomes) if (!o.ok) errors.set(o.error!, (errors.get(o.error!) ?? 0) + 1);
    console.log(
      `[batchrev cluster moved] rounds=${round} calls=${outcomes.length} acked=${acked.length} twice=${twice.length} ` +
        `errors=${JSON.stringify([...errors])} maxMs=${Math.max(...outcomes.map((o) => o.ms))} replayedAgain=${again.filter((o) => o.replayed).length}`,
    );
    expect(round).toBeGreaterThan(3);
    expect(outcomes.filter((o) => o.error === 'HUNG')).toEqual([]);
    expect(twice).toEqual([]);
    expect(again.filter((o) => !(o.ok && o.replayed && o.value === `v-${o.key}`))).toEqual([]);
    expect(client.nodes('master').map(corked)).toEqual([0, 0, 0]);
  });
});
