/**
 * redrev adversarial review: Redis killed (-9) and restarted empty under an execution, a long
 * outage, and a full Redis (maxmemory, noeviction) under the engine.
 */
import {
  createIdempotency,
  LeaseLostError,
  StoreFullError,
  StoreUnavailableError,
} from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  restartRedisServer,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import {
  COMMAND_TIMEOUT,
  connectTo,
  queued,
  SLACK,
  settle,
  sleep,
  token,
} from './redrev-helpers.js';
import { rawRecord } from './targets.js';

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();
const RETENTION = 60_000;
const MAX_RECONNECT = 500; // connectTo's maxReconnectDelayMs

describe('redrev: kill -9 and restart empty, long outage', () => {
  let server: RedisServer | undefined;
  const clients: Redis[] = [];
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    if (server) await stopRedisServer(server);
  });

  it('restart without persistence during an execution: the completion is refused as LeaseLostError (typed), as documented the retry runs again', async () => {
    server = await startRedisServer();
    const client = await connectTo(server.port);
    clients.push(client);
    const store = createRedisStore({ client, keyPrefix: 'redrev-restart:' });
    const idem = createIdempotency<string>({ store, leaseMs: 3_000, retentionMs: RETENTION });
    let runs = 0;
    const first = await settle(
      () =>
        idem.execute({ key: 'charge', scope: 't' }, async ({ fence }) => {
          runs++;
          expect(fence).toBe(1);
          await signalRedisServer(server as RedisServer, 'SIGKILL');
          await sleep(1_000);
          server = await restartRedisServer(server as RedisServer);
          return 'charged';
        }),
      15_000,
    );
    expect(first.hung).toBeFalsy();
    // Never a silent success: the record the outcome belonged to is gone.
    expect(first.error).toBeInstanceOf(LeaseLostError);
    // Documented (README, Durability): a restart without persistence loses every record,
    // and the retry of that request executes again; fences restart too (no fence memory).
    const retry = await idem.execute({ key: 'charge', scope: 't' }, async ({ fence }) => {
      runs++;
      return `again at fence ${fence}`;
    });
    expect(retry).toEqual({ value: 'again at fence 1', replayed: false });
    expect(runs).toBe(2);
  });

  it('down 10 s (many reconnect attempts): calls fail fast and typed, the client queue stays empty, service returns by itself', async () => {
    if (!server) server = await startRedisServer();
    const client = await connectTo(server.port);
    clients.push(client);
    const store = createRedisStore({ client, keyPrefix: 'redrev-outage:' });
    const idem = createIdempotency<string>({ store, leaseMs: 3_000, retentionMs: RETENTION });
    expect((await idem.execute({ key: 'before', scope: 't' }, async () => 'x')).value).toBe('x');
    await signalRedisServer(server, 'SIGKILL');
    let maxQueued = 0;
    let calls = 0;
    let reconnects = 0;
    client.on('reconnecting', () => reconnects++);
    const until = performance.now() + 10_000;
    while (performance.now() < until) {
      const r = await settle(
        () => idem.execute({ key: `k${calls++}`, scope: 't' }, async () => 'y'),
        8_000,
      );
      expect(r.hung).toBeFalsy();
      expect(r.error).toBeInstanceOf(StoreUnavailableError);
      expect(r.ms).toBeLessThan(COMMAND_TIMEOUT + SLACK);
      maxQueued = Math.max(maxQueued, queued(client));
      await sleep(100);
    }
    expect(reconnects).toBeGreaterThan(5);
    expect(maxQueued).toBeLessThanOrEqual(1);
    server = await restartRedisServer(server);
    const back = performance.now();
    let ok = false;
    while (!ok && performance.now() - back < 10_000) {
      ok = await idem
        .execute({ key: 'after', scope: 't' }, async () => 'z')
        .then(() => true)
        .catch(async () => {
          await sleep(50);
          return false;
        });
    }
    const recoveredMs = performance.now() - back;
    console.log(
      `[redrev] outage 10 s: ${calls} calls failed, ${reconnects} reconnects, recovered ${Math.round(recoveredMs)} ms after restart`,
    );
    expect(ok).toBe(true);
    expect(recoveredMs).toBeLessThan(MAX_RECONNECT + SLACK);
  });
});

describe('redrev: a full Redis (maxmemory 4mb, noeviction) under the engine', () => {
  let server: RedisServer | undefined;
  const clients: Redis[] = [];
  afterAll(async () => {
    for (const c of clients) c.disconnect();
    if (server) await stopRedisServer(server);
  });

  it('new keys get StoreFullError and never run; running executions renew, complete, are redelivered and replay; a takeover changes nothing', async () => {
    server = await startRedisServer(['--maxmemory', '4mb', '--maxmemory-policy', 'noeviction']);
    const client = await connectTo(server.port);
    const raw = await connectTo(server.port);
    clients.push(client, raw);
    const store = createRedisStore({ client, keyPrefix: 'redrev-oom:' });
    const idem = createIdempotency<string>({
      store,
      leaseMs: 3_000,
      heartbeatMs: 500,
      retentionMs: RETENTION,
    });
    // A stale execution whose lease will have passed (a takeover candidate).
    const staleOwner = token();
    expect(
      (
        await store.acquire({
          key: 'stale',
          fingerprint: 'fp',
          owner: staleOwner,
          leaseMs: 200,
          retentionMs: RETENTION,
        })
      ).kind,
    ).toBe('acquired');
    // A redelivery candidate.
    const mine = token();
    const acquired = await store.acquire({
      key: 'mine',
      fingerprint: 'fp',
      owner: mine,
      leaseMs: 30_000,
      retentionMs: RETENTION,
    });
    expect(acquired.kind).toBe('acquired');
    let runs = 0;
    let fill: () => Promise<void> = async () => {};
    const running = idem.execute({ key: 'running', scope: 't' }, async () => {
      runs++;
      await fill();
      await sleep(1_200); // heartbeats under a full Redis
      return 'r'.repeat(200_000);
    });
    fill = async () => {
      const filler = 'f'.repeat(100_000);
      for (let i = 0; i < 200; i++) {
        const refused = await raw.set(`redrev-filler:${i}`, filler).then(
          () => false,
          (e: unknown) => String((e as Error).message).startsWith('OOM'),
        );
        if (refused) return;
      }
      throw new Error('Redis never filled up');
    };
    // Wait until the filler ran, then try new keys.
    await sleep(300);
    while (
      (await raw.set('redrev-probe', 'x').then(
        () => true,
        () => false,
      )) === true
    )
      await sleep(50);
    const fresh = await settle(
      () =>
        idem.execute({ key: 'new', scope: 't' }, async () => {
          runs++;
          return 'n';
        }),
      8_000,
    );
    expect(fresh.error).toBeInstanceOf(StoreFullError);
    expect((fresh.error as Error).cause).toBeInstanceOf(Error);
    // The redelivered acquisition of a held key is not refused.
    expect(
      await store.acquire({
        key: 'mine',
        fingerprint: 'fp',
        owner: mine,
        leaseMs: 30_000,
        retentionMs: RETENTION,
      }),
    ).toMatchObject({
      kind: 'acquired',
      fence: (acquired as { fence: number }).fence,
    });
    // A takeover of the stale key needs memory: refused, the stale record unchanged.
    const before = await rawRecord(raw, store.redisKey('stale'));
    const takeover = await store
      .acquire({
        key: 'stale',
        fingerprint: 'fp',
        owner: token(),
        leaseMs: 30_000,
        retentionMs: RETENTION,
      })
      .catch((e: unknown) => e);
    expect(takeover).toBeInstanceOf(StoreFullError);
    expect(await rawRecord(raw, store.redisKey('stale'))).toEqual(before);
    // The running execution completes (200 kB over maxmemory) and replays.
    const done = await running;
    expect(done.replayed).toBe(false);
    const replay = await idem.execute({ key: 'running', scope: 't' }, async () => {
      runs++;
      return 'again';
    });
    expect(replay.replayed).toBe(true);
    expect(replay.value).toBe('r'.repeat(200_000));
    expect(runs).toBe(1);
  });
});
