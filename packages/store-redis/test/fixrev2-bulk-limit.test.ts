/**
 * fixrev2: adversarial review of 39f9efd (proto-max-bulk-len read lazily, client checks).
 * Faults only on redis-servers started here (never the shared one's settings).
 */
import { createServer, type Socket, connect as tcpConnect } from 'node:net';
import {
  createIdempotency,
  InvalidInputError,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
} from '@idem/core';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, recommendedRedisClusterOptions } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startCluster,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import { connectTo, token } from './redrev-helpers.js';

const MiB = 1024 * 1024;
const KiB = 1024;
const RETENTION = 60_000;
const acquireInput = (key: string, owner: string) => ({
  key,
  fingerprint: 'fp',
  owner,
  leaseMs: 30_000,
  retentionMs: RETENTION,
});
const rejection = (p: Promise<unknown>): Promise<unknown> =>
  p.then(
    () => undefined,
    (e: unknown) => e,
  );
const waitReady = async (client: Redis) => {
  for (let i = 0; i < 250 && client.status !== 'ready'; i++)
    await new Promise((r) => setTimeout(r, 20));
};
async function configCalls(client: Redis): Promise<number> {
  const info = await client.info('commandstats');
  const line = info.split('\n').find((l) => l.startsWith('cmdstat_config|get:'));
  return Number(/calls=(\d+)/.exec(line ?? '')?.[1] ?? 0);
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('fixrev2: proto-max-bulk-len changed at runtime', () => {
  let server: RedisServer;
  let admin: Redis;
  beforeAll(async () => {
    server = await startRedisServer(['--proto-max-bulk-len', '1mb']);
    admin = await connectTo(server.port);
  });
  afterAll(async () => {
    admin?.disconnect();
    if (server) await stopRedisServer(server);
  });

  // FINDING (MEDIUM): the limit read with CONFIG GET is kept for the life of the store and is
  // only read again after a completion FAILS; an outcome refused by the kept limit (check()
  // throws OutcomeTooLargeError before sending) does not count as a failure. After an operator
  // raises proto-max-bulk-len (CONFIG SET, or a failover to a server configured higher), every
  // outcome between the old and the new limit is refused as too large, forever, until the
  // process restarts — though the server now takes it. Suggested fix: let a kept limit expire
  // (re-read after some minutes), or re-read once when check() is about to refuse an outcome
  // (a refusal is rare and already costs a not-recorded marker), bounded to one read at a time.
  // Fixed: an outcome the kept limit would refuse is judged by the limit read again.
  it('an outcome the server takes after CONFIG SET raised the limit is recorded', async () => {
    await admin.config('SET', 'proto-max-bulk-len', String(1 * MiB));
    const client = await connectTo(server.port);
    try {
      const store = createRedisStore({ client, keyPrefix: `fr2-raise-${token()}:` });
      const outcome = new Uint8Array(1200 * KiB).fill(3);
      const o1 = token();
      await store.acquire(acquireInput('a', o1));
      expect(
        await rejection(store.complete({ key: 'a', owner: o1, outcome, retentionMs: RETENTION })),
      ).toBeInstanceOf(OutcomeTooLargeError);
      // The operator raises the limit: 4 MiB now.
      await admin.config('SET', 'proto-max-bulk-len', String(4 * MiB));
      const o2 = token();
      await store.acquire(acquireInput('b', o2));
      expect(
        await rejection(store.complete({ key: 'b', owner: o2, outcome, retentionMs: RETENTION })),
      ).toBeUndefined();
    } finally {
      client.disconnect();
      await admin.config('SET', 'proto-max-bulk-len', String(1 * MiB));
    }
  });

  it('held: limit LOWERED after it was read: the engine runs once, the retry replays the not-recorded marker', async () => {
    await admin.config('SET', 'proto-max-bulk-len', String(16 * MiB));
    const client = await connectTo(server.port);
    try {
      const store = createRedisStore({ client, keyPrefix: `fr2-lower-${token()}:` });
      const idem = createIdempotency<string>({ store, heartbeatMs: false });
      let runs = 0;
      const value = 'q'.repeat(3 * MiB);
      // First large outcome: the limit (16 MiB) is read and kept; it records.
      await idem.execute({ key: 'warm', scope: 's' }, async () => value);
      await admin.config('SET', 'proto-max-bulk-len', String(1 * MiB));
      const results: unknown[] = [];
      for (let i = 0; i < 3; i++) {
        await waitReady(client);
        results.push(
          await rejection(
            idem.execute({ key: 'k', scope: 's' }, async () => {
              runs++;
              return value;
            }),
          ),
        );
      }
      expect(runs).toBe(1);
      expect(results[0]).toBeInstanceOf(OutcomeTooLargeError);
      expect(results[1]).toBeInstanceOf(OutcomeNotRecordedError);
      expect(results[2]).toBeInstanceOf(OutcomeNotRecordedError);
    } finally {
      client.disconnect();
      await admin.config('SET', 'proto-max-bulk-len', String(1 * MiB));
    }
  });

  it('held: 20 concurrent first large completions read CONFIG once and all land', async () => {
    await admin.config('SET', 'proto-max-bulk-len', String(4 * MiB));
    const client = await connectTo(server.port);
    try {
      await admin.config('RESETSTAT');
      const store = createRedisStore({ client, keyPrefix: `fr2-conc-${token()}:` });
      const outcome = new Uint8Array(1100 * KiB).map((_, i) => i % 251);
      const owners = Array.from({ length: 20 }, () => token());
      await Promise.all(owners.map((o, i) => store.acquire(acquireInput(`c${i}`, o))));
      const results = await Promise.all(
        owners.map((o, i) =>
          store.complete({ key: `c${i}`, owner: o, outcome, retentionMs: RETENTION }),
        ),
      );
      expect(results.every((r) => r.ok)).toBe(true);
      expect(await configCalls(admin)).toBe(1);
      for (let i = 0; i < 20; i++)
        expect(Buffer.from((await store.get(`c${i}`))?.outcome as Uint8Array).equals(outcome)).toBe(
          true,
        );
    } finally {
      client.disconnect();
      await admin.config('SET', 'proto-max-bulk-len', String(1 * MiB));
    }
  });

  it('held: just below / at / above the 1 MiB server limit (less 64 KiB)', async () => {
    await admin.config('SET', 'proto-max-bulk-len', String(1 * MiB));
    const client = await connectTo(server.port);
    let drops = 0;
    client.on('close', () => drops++);
    try {
      const store = createRedisStore({ client, keyPrefix: `fr2-edge-${token()}:` });
      const at = 1 * MiB - 64 * KiB;
      for (const [size, ok] of [
        [at - 1, true],
        [at, true],
        [at + 1, false],
        [1 * MiB, false],
        [1 * MiB + 1, false],
      ] as const) {
        const o = token();
        await store.acquire(acquireInput(`e${size}`, o));
        const r = await rejection(
          store.complete({
            key: `e${size}`,
            owner: o,
            outcome: new Uint8Array(size),
            retentionMs: RETENTION,
          }),
        );
        if (ok) expect(r).toBeUndefined();
        else expect(r).toBeInstanceOf(OutcomeTooLargeError);
      }
      expect(drops).toBe(0);
    } finally {
      client.disconnect();
    }
  });
});

/** A TCP proxy to `port` that cuts the connection the first `cuts` times a CONFIG is sent. */
async function configCuttingProxy(port: number, cuts: number) {
  let left = cuts;
  const sockets = new Set<Socket>();
  const server = createServer((inbound) => {
    const outbound = tcpConnect(port, '127.0.0.1');
    sockets.add(inbound);
    sockets.add(outbound);
    inbound.on('data', (chunk: Buffer) => {
      if (left > 0 && chunk.includes('proto-max-bulk-len')) {
        left--;
        inbound.destroy();
        outbound.destroy();
        return;
      }
      outbound.write(chunk);
    });
    outbound.on('data', (chunk) => inbound.write(chunk));
    for (const s of [inbound, outbound]) {
      s.on('error', () => {});
      s.on('close', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

describe('fixrev2: connection cut while CONFIG GET is read', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedisServer(['--proto-max-bulk-len', '2mb']);
  });
  afterAll(async () => {
    if (server) await stopRedisServer(server);
  });

  it('held: engine runs once and the large outcome lands after CONFIG GET was cut twice', async () => {
    const proxy = await configCuttingProxy(server.port, 2);
    const client = await connectTo(proxy.port);
    try {
      const store = createRedisStore({ client, keyPrefix: `fr2-cut-${token()}:` });
      const idem = createIdempotency<string>({ store, heartbeatMs: false });
      let runs = 0;
      const value = 'w'.repeat(1200 * KiB);
      const first = await rejection(
        idem.execute({ key: 'k', scope: 's' }, async () => {
          runs++;
          return value;
        }),
      );
      await waitReady(client);
      const second = await idem
        .execute({ key: 'k', scope: 's' }, async () => {
          runs++;
          return 'second';
        })
        .catch((e: unknown) => e);
      expect(runs).toBe(1);
      // Either the first call landed (then the second replays it) or it is still landing.
      if (first === undefined) expect((second as { value?: unknown }).value).toBe(value);
    } finally {
      client.disconnect();
      await proxy.close();
    }
  });
});

describe('fixrev2: a transient ReplyError at the first CONFIG GET', () => {
  let server: RedisServer;
  beforeAll(async () => {
    server = await startRedisServer([
      '--proto-max-bulk-len',
      '1mb',
      '--busy-reply-threshold',
      '50',
    ]);
  });
  afterAll(async () => {
    if (server) await stopRedisServer(server);
  });

  // FINDING (LOW): any ReplyError answering the first CONFIG GET is taken as "CONFIG refused
  // for good" (refused = true, limit assumed 512 MiB, never asked again), including transient
  // ones: -BUSY while a slow script runs (CONFIG is not allow-busy). After such a moment, on a
  // server whose real proto-max-bulk-len is 1 MiB (and CONFIG works), a 1.2 MiB outcome is
  // SENT: Redis refuses it with a protocol error and closes the connection, cutting every
  // other call on it — what bulk-limit.ts promises never to do when CONFIG is readable.
  // (The 1.2 MiB outcome sent DURING the busy script is itself refused by Redis's parser, and
  // the bound learned is 1.2 MiB - 1, reported as the limit.) Every later outcome of a new,
  // smaller size above the real limit is sent and drops the connection again.
  // Exactly-once still holds (the refusal is mapped to OutcomeTooLargeError). Suggested fix:
  // treat only permanent refusals (unknown command, NOPERM) as "CONFIG refused"; for BUSY,
  // LOADING, TRYAGAIN and other transient replies, reject and read again next time.
  // Fixed: BUSY, LOADING and the like reject and are asked again; only unknown command / NOPERM count as CONFIG refused.
  it('after a BUSY reply to CONFIG GET, a too-large outcome is still not sent (no connection drop)', async () => {
    const client = await connectTo(server.port);
    const busy = await connectTo(server.port, { commandTimeout: 10_000 });
    let drops = 0;
    client.on('close', () => drops++);
    try {
      const store = createRedisStore({ client, keyPrefix: `fr2-busy-${token()}:` });
      const outcome = new Uint8Array(1200 * KiB);
      const o1 = token();
      await store.acquire(acquireInput('a', o1));
      // A script running for ~600 ms: the server answers -BUSY to other clients meanwhile.
      const script = busy.eval(
        "local s = redis.call('TIME') local t0 = s[1]*1000000 + s[2] repeat local n = redis.call('TIME') until n[1]*1000000 + n[2] - t0 > 600000 return 1",
        0,
      );
      await new Promise((r) => setTimeout(r, 150));
      const during = await rejection(
        store.complete({ key: 'a', owner: o1, outcome, retentionMs: RETENTION }),
      );
      await script;
      await waitReady(client);
      expect(during).toBeDefined();
      const dropsBefore = drops;
      const o2 = token();
      await store.acquire(acquireInput('b', o2));
      // Smaller than the refused one (so not covered by the bound learned from the refusal),
      // still above what the server takes (1 MiB less 64 KiB by CONFIG GET).
      const after = await rejection(
        store.complete({
          key: 'b',
          owner: o2,
          outcome: new Uint8Array(1100 * KiB),
          retentionMs: RETENTION,
        }),
      );
      expect(after).toBeInstanceOf(OutcomeTooLargeError);
      // (the close event follows the refusal's reply)
      await new Promise((r) => setTimeout(r, 300));
      expect(drops).toBe(dropsBefore);
    } finally {
      client.disconnect();
      busy.disconnect();
    }
  });
});

describe('fixrev2: an own 3-primary Cluster with unequal limits', () => {
  let servers: RedisServer[] = [];
  beforeAll(async () => {
    servers = await startCluster(3);
  });
  afterAll(async () => {
    await Promise.all(servers.map(stopRedisServer));
  });

  it('held: least primary limit used (not sent, no drop); a primary lowered later: engine runs once per key', async () => {
    const admins = await Promise.all(servers.map((s) => connectTo(s.port)));
    const client = new Cluster(
      servers.map((s) => ({ host: '127.0.0.1', port: s.port })),
      { ...recommendedRedisClusterOptions({ commandTimeoutMs: 5_000 }), lazyConnect: true },
    );
    client.on('error', () => {});
    try {
      await Promise.all(admins.map((a) => a.config('SET', 'proto-max-bulk-len', String(4 * MiB))));
      await (admins[2] as Redis).config('SET', 'proto-max-bulk-len', String(2 * MiB));
      await client.connect();
      const store = createRedisStore({ client, keyPrefix: `fr2-cl-${token()}:` });
      // 3 MiB: above the least primary limit (2 MiB - 64 KiB) on whichever node the key lives.
      for (const key of ['a', 'b', 'c', 'd']) {
        const o = token();
        await store.acquire(acquireInput(key, o));
        expect(
          await rejection(
            store.complete({
              key,
              owner: o,
              outcome: new Uint8Array(3 * MiB),
              retentionMs: RETENTION,
            }),
          ),
        ).toBeInstanceOf(OutcomeTooLargeError);
      }
      // Lower every primary to 1 MiB after the read: outcomes of 1.5 MiB through the engine.
      await Promise.all(admins.map((a) => a.config('SET', 'proto-max-bulk-len', String(1 * MiB))));
      const idem = createIdempotency<string>({ store, heartbeatMs: false });
      const value = 'm'.repeat(1536 * KiB);
      for (const key of ['k1', 'k2', 'k3', 'k4', 'k5']) {
        let runs = 0;
        for (let i = 0; i < 2; i++) {
          await rejection(
            idem.execute({ key, scope: 's' }, async () => {
              runs++;
              return value;
            }),
          );
        }
        expect(runs).toBe(1);
      }
    } finally {
      client.disconnect();
      for (const a of admins) a.disconnect();
    }
  });
});

describe('fixrev2: client look-alikes and keyPrefix', () => {
  it('held: a subclass of Redis and a Proxy around a Redis are taken and work', async () => {
    class MyRedis extends Redis {}
    const sub = new MyRedis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
    const base = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
    const proxied = new Proxy(base, {});
    try {
      for (const client of [sub, proxied]) {
        const store = createRedisStore({ client, keyPrefix: `fr2-look-${token()}:` });
        const o = token();
        await store.acquire(acquireInput('x', o));
        expect(
          await store.complete({
            key: 'x',
            owner: o,
            outcome: new Uint8Array([1, 2]),
            retentionMs: RETENTION,
          }),
        ).toEqual({ ok: true });
        await client.del(store.redisKey('x'), `${store.redisKey('x')}:fence`);
      }
    } finally {
      sub.disconnect();
      base.disconnect();
    }
  });

  it('held: a plain object copying a client’s fields but not a client (no sendCommand) is refused', () => {
    const base = new Redis({ lazyConnect: true });
    try {
      const fake = {
        isCluster: false,
        status: 'ready',
        options: {},
        defineCommand: () => {},
      };
      expect(() => createRedisStore({ client: fake as never })).toThrow(InvalidInputError);
    } finally {
      base.disconnect();
    }
  });

  // FINDING (LOW): keyPrefix is documented as "at most 1024 characters" but is measured in
  // UTF-16 code units (string.length): a prefix of 600 emoji (600 characters, 1200 code units)
  // is refused with "at most 1024 characters". Suggested fix: say "UTF-16 code units" (or
  // bytes, which is what bounds key size) in the docs and message, or count code points.
  // Fixed: the limit is stated as what it is, in the docs and in core's message (UTF-16 code
  // units, an emoji counting two); 512 emoji are taken, 600 refused with that message.
  it('a keyPrefix is measured as documented: 512 emoji taken, 600 refused naming UTF-16 code units', () => {
    const client = new Redis({ lazyConnect: true });
    try {
      expect(() => createRedisStore({ client, keyPrefix: '😀'.repeat(512) })).not.toThrow();
      expect(() => createRedisStore({ client, keyPrefix: '😀'.repeat(600) })).toThrow(
        /at most 1024 UTF-16 code units/,
      );
    } finally {
      client.disconnect();
    }
  });

  it('held: keyPrefix of 1024 BMP unicode characters is taken, 1025 refused', () => {
    const client = new Redis({ lazyConnect: true });
    try {
      expect(() => createRedisStore({ client, keyPrefix: 'é'.repeat(1024) })).not.toThrow();
      expect(() => createRedisStore({ client, keyPrefix: 'é'.repeat(1025) })).toThrow(
        InvalidInputError,
      );
    } finally {
      client.disconnect();
    }
  });
});
