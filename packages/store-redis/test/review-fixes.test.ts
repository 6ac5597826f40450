/**
 * The fixes of the redrev bad-input findings, at their edges: which clients creation takes,
 * the keyPrefix and maxOutcomeBytes bounds, and outcomes against a server's own
 * proto-max-bulk-len (read with CONFIG GET, or recognised from Redis's refusal when CONFIG is
 * not allowed). Faults only on redis-servers started here.
 */
import {
  createIdempotency,
  InvalidInputError,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  StoreUnavailableError,
} from '@idem/core';
import { Cluster, Redis } from 'ioredis';
import * as ioredis6 from 'ioredis6';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import { connectTo, token } from './redrev-helpers.js';
import { cluster, clusterPorts, deletePrefix, randomPrefix, rawRecord } from './targets.js';

const MiB = 1024 * 1024;
const RETENTION = 60_000;
const acquireInput = (key: string, owner: string) => ({
  key,
  fingerprint: 'fp',
  owner,
  leaseMs: 30_000,
  retentionMs: RETENTION,
});

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (e: unknown) => e,
  );
}

/** Calls of CONFIG the server answered so far (INFO commandstats). */
async function configCalls(client: Redis): Promise<number> {
  const info = await client.info('commandstats');
  const line = info.split('\n').find((l) => l.startsWith('cmdstat_config|get:'));
  return Number(/calls=(\d+)/.exec(line ?? '')?.[1] ?? 0);
}

describe('creation: which clients and options are taken', () => {
  it('real Redis and Cluster clients of both ioredis majors are taken, unconnected too', () => {
    const clients = [
      new Redis({ lazyConnect: true }),
      new Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true }),
      new ioredis6.Redis({ lazyConnect: true }),
      new ioredis6.Cluster([{ host: '127.0.0.1', port: 1 }], { lazyConnect: true }),
    ];
    try {
      for (const client of clients) {
        expect(() => createRedisStore({ client: client as never })).not.toThrow();
        // stringNumbers: false is fine; true is refused.
      }
      const fine = new Redis({ lazyConnect: true, stringNumbers: false });
      expect(() => createRedisStore({ client: fine })).not.toThrow();
      fine.disconnect();
    } finally {
      for (const client of clients) client.disconnect();
    }
  });

  it('pipelines, transactions and stringNumbers clients of both majors are refused', () => {
    const v5 = new Redis({ lazyConnect: true });
    const v6 = new ioredis6.Redis({ lazyConnect: true });
    const refused = [
      v5.pipeline(),
      v5.multi(),
      v6.pipeline(),
      v6.multi(),
      new Redis({ lazyConnect: true, stringNumbers: true }),
      new ioredis6.Redis({ lazyConnect: true, stringNumbers: true }),
      new Cluster([{ host: '127.0.0.1', port: 1 }], {
        lazyConnect: true,
        redisOptions: { stringNumbers: true },
      }),
      new ioredis6.Cluster([{ host: '127.0.0.1', port: 1 }], {
        lazyConnect: true,
        redisOptions: { stringNumbers: true },
      }),
    ];
    try {
      for (const client of refused) {
        expect(() => createRedisStore({ client: client as never })).toThrow(InvalidInputError);
      }
      expect(() => createRedisStore(undefined as never)).toThrow(InvalidInputError);
    } finally {
      v5.disconnect();
      v6.disconnect();
      for (const client of refused) (client as { disconnect?: () => void }).disconnect?.();
    }
  });

  it('keyPrefix is taken up to 1024 characters, and maxOutcomeBytes up to 512 MiB less 64 KiB', () => {
    const client = new Redis({ lazyConnect: true });
    try {
      expect(() => createRedisStore({ client, keyPrefix: 'p'.repeat(1024) })).not.toThrow();
      expect(() => createRedisStore({ client, keyPrefix: 'p'.repeat(1025) })).toThrow(
        InvalidInputError,
      );
      const limit = 512 * MiB - 64 * 1024;
      expect(
        createRedisStore({ client, maxOutcomeBytes: limit }).capabilities.maxOutcomeBytes,
      ).toBe(limit);
      for (const bad of [limit + 1, 512 * MiB, 2 ** 40, Number.POSITIVE_INFINITY]) {
        expect(() => createRedisStore({ client, maxOutcomeBytes: bad })).toThrow(InvalidInputError);
      }
    } finally {
      client.disconnect();
    }
  });
});

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('outcomes against the server proto-max-bulk-len', () => {
  let limited: RedisServer;
  let noConfig: RedisServer;
  beforeAll(async () => {
    [limited, noConfig] = await Promise.all([
      startRedisServer(['--proto-max-bulk-len', '2mb']),
      // A managed Redis that hides CONFIG: the store learns the limit from Redis's refusal.
      startRedisServer(['--proto-max-bulk-len', '1mb', '--rename-command', 'CONFIG', '""']),
    ]);
  });
  afterAll(async () => {
    await Promise.all([limited, noConfig].filter(Boolean).map(stopRedisServer));
  });

  it('reads the limit only for an outcome above 960 KiB (again before each refusal); records what fits, refuses what does not without sending it', async () => {
    const client = await connectTo(limited.port);
    const raw = await connectTo(limited.port);
    let drops = 0;
    client.on('close', () => drops++);
    try {
      const store = createRedisStore({ client, keyPrefix: 'fix-limit:' });
      const small = new Uint8Array(960 * 1024).fill(7);
      const owner = token();
      await store.acquire(acquireInput('small', owner));
      expect(
        await store.complete({ key: 'small', owner, outcome: small, retentionMs: RETENTION }),
      ).toEqual({ ok: true });
      expect(await configCalls(raw)).toBe(0);

      const fits = new Uint8Array(2 * MiB - 64 * 1024).map((_, i) => i % 253);
      const tooBig = new Uint8Array(2 * MiB - 64 * 1024 + 1);
      for (const [key, outcome] of [
        ['fits', fits],
        ['big', tooBig],
        ['big2', tooBig],
      ] as const) {
        const o = token();
        await store.acquire(acquireInput(key, o));
        const before = await rawRecord(raw, store.redisKey(key));
        const result = await rejection(
          store.complete({ key, owner: o, outcome, retentionMs: RETENTION }),
        );
        if (outcome === fits) {
          expect(result).toBeUndefined();
          // (Buffer.equals: vitest's toEqual walks megabytes byte by byte, for seconds.)
          expect(Buffer.from((await store.get(key))?.outcome as Uint8Array).equals(fits)).toBe(
            true,
          );
        } else {
          expect(result).toBeInstanceOf(OutcomeTooLargeError);
          expect(result).toMatchObject({ size: tooBig.length, limit: 2 * MiB - 64 * 1024 });
          expect(await rawRecord(raw, store.redisKey(key))).toEqual(before);
        }
      }
      // One read for `fits` (kept), then one more before each refusal (fixrev2: a limit raised
      // since is seen): 3. Nothing is read for outcomes the kept limit takes.
      expect(await configCalls(raw)).toBe(3);
      expect(drops).toBe(0);
    } finally {
      client.disconnect();
      raw.disconnect();
    }
  });

  it('without CONFIG: Redis refusing the length is OutcomeTooLargeError (not an outage), the next such outcome is not sent, and the engine runs once', async () => {
    const client = await connectTo(noConfig.port);
    let drops = 0;
    client.on('close', () => drops++);
    try {
      const store = createRedisStore({ client, keyPrefix: 'fix-noconfig:' });
      const big = new Uint8Array(1_500_000);
      const owner = token();
      await store.acquire(acquireInput('k', owner));
      // Redis answers the refusal and closes the connection; the answer can be lost with it
      // (a reset while the client still writes), and then ioredis resends the script once:
      // a call may fail as an outage, but a retry learns the refusal.
      let first: unknown;
      for (let attempt = 0; attempt < 5; attempt++) {
        while (client.status !== 'ready') await new Promise((r) => setTimeout(r, 20));
        first = await rejection(
          store.complete({ key: 'k', owner, outcome: big, retentionMs: RETENTION }),
        );
        if (!(first instanceof StoreUnavailableError)) break;
      }
      expect(first).toBeInstanceOf(OutcomeTooLargeError);
      while (client.status !== 'ready') await new Promise((r) => setTimeout(r, 20));
      expect((await store.get('k'))?.status).toBe('in_progress');
      const dropsAfterFirst = drops;
      // Known now: not sent again (no connection dropped).
      while (client.status !== 'ready') await new Promise((r) => setTimeout(r, 20));
      const again = await rejection(
        store.complete({ key: 'k', owner, outcome: big, retentionMs: RETENTION }),
      );
      expect(again).toBeInstanceOf(OutcomeTooLargeError);
      expect(drops).toBe(dropsAfterFirst);
      // Small outcomes still land.
      expect(
        await store.complete({
          key: 'k',
          owner,
          outcome: new Uint8Array([1]),
          retentionMs: RETENTION,
        }),
      ).toEqual({ ok: true });

      // Through the engine, on a fresh store (nothing known yet): one run, then the marker.
      const fresh = createRedisStore({ client, keyPrefix: 'fix-noconfig-engine:' });
      const idem = createIdempotency<string>({ store: fresh, heartbeatMs: false });
      let runs = 0;
      const value = 'z'.repeat(1_500_000);
      const run = () =>
        rejection(
          idem.execute({ key: 'e', scope: 's' }, async () => {
            runs++;
            return value;
          }),
        );
      expect(await run()).toBeInstanceOf(OutcomeTooLargeError);
      expect(runs).toBe(1);
      while (client.status !== 'ready') await new Promise((r) => setTimeout(r, 20));
      expect(await run()).toBeInstanceOf(OutcomeNotRecordedError);
      expect(runs).toBe(1);
    } finally {
      client.disconnect();
    }
  });
});

describe.skipIf(!clusterPorts)('outcomes above 960 KiB on a Cluster', () => {
  it('reads the limit of the primaries and records an outcome that fits', async () => {
    const client = await cluster.connect();
    const prefix = randomPrefix();
    try {
      const store = createRedisStore({ client, keyPrefix: prefix });
      const outcome = new Uint8Array(3 * MiB).map((_, i) => i % 249);
      const owner = token();
      await store.acquire(acquireInput('c', owner));
      expect(await store.complete({ key: 'c', owner, outcome, retentionMs: RETENTION })).toEqual({
        ok: true,
      });
      expect(Buffer.from((await store.get('c'))?.outcome as Uint8Array).equals(outcome)).toBe(true);
    } finally {
      await deletePrefix(client, prefix);
      client.disconnect();
    }
  });
});
