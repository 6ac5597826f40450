/**
 * Redelivered calls (store contract rule 7): a call applied once and delivered again, as
 * ioredis does when it resends what a dropped connection left unanswered, answers what the
 * first delivery would have answered.
 */
import { randomBytes } from 'node:crypto';
import { createIdempotency } from '@idem/core';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore, recommendedRedisOptions } from '../src/index.js';
import { startLostAnswerProxy } from './lost-answer-proxy.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import {
  type Client,
  deletePrefix,
  keyGoneAt,
  randomPrefix,
  rawRecord,
  skipTarget,
  TEST_CLIENT_BOUNDS,
  targets,
} from './targets.js';

const LEASE = 30_000;
const RETENTION = 60_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const owner = () => randomBytes(16).toString('base64url');
const NOT_OWNER = { ok: false, reason: 'not_owner' };

for (const target of targets) {
  describe.skipIf(skipTarget(target))(`redelivered calls on ${target.name}`, () => {
    let client: Client;
    let raw: Client;
    let prefix = randomPrefix();
    let store: RedisStore;

    beforeAll(async () => {
      client = await target.connect();
      raw = await target.connect();
    });
    afterAll(() => {
      client?.disconnect();
      raw?.disconnect();
    });
    afterEach(async () => {
      await deletePrefix(raw, prefix);
    });
    const fresh = () => {
      prefix = randomPrefix();
      store = createRedisStore({ client, keyPrefix: prefix });
    };
    const acquire = (who: string, leaseMs = LEASE) =>
      store.acquire({ key: 'k', fingerprint: 'fp', owner: who, leaseMs, retentionMs: RETENTION });

    it('an acquire that finds its own live lease is its acquisition: same fence, lease renewed', async () => {
      fresh();
      const me = owner();
      const first = await acquire(me);
      expect(first).toMatchObject({ kind: 'acquired', fence: 1, takeover: false, origin: me });
      if (first.kind !== 'acquired') throw new Error('unreachable');
      await sleep(20);
      const again = await acquire(me);
      expect(again).toMatchObject({ kind: 'acquired', fence: 1, takeover: false, origin: me });
      if (again.kind !== 'acquired') throw new Error('unreachable');
      expect(again.leaseUntil).toBeGreaterThan(first.leaseUntil);
      const record = await rawRecord(raw, store.redisKey('k'));
      expect(record).toEqual({
        status: 'in_progress',
        fingerprint: 'fp',
        owner: me,
        fence: 1,
        origin: me,
        leaseUntil: again.leaseUntil,
        expiresAt: again.leaseUntil + RETENTION,
      });
      expect(await keyGoneAt(raw, store.redisKey('k'))).toBe(again.leaseUntil + RETENTION);
      expect(await raw.get(store.fenceKey('k'))).toBe('1');
      // Anyone else still finds the lease.
      expect((await acquire(owner())).kind).toBe('found');
    });

    it('also after its lease passed, as long as nobody took it over; not once somebody did', async () => {
      fresh();
      const me = owner();
      await acquire(me, 100);
      await sleep(200);
      const again = await acquire(me);
      expect(again).toMatchObject({ kind: 'acquired', fence: 1, takeover: false, origin: me });
      expect(await rawRecord(raw, store.redisKey('k'))).toMatchObject({
        status: 'in_progress',
        owner: me,
        fence: 1,
      });
      // Renewed to a short lease again, which then passes and is taken over.
      expect(await acquire(me, 100)).toMatchObject({ kind: 'acquired', fence: 1 });
      await sleep(200);
      const newer = owner();
      // The takeover continues the logical request `me` began: its origin is carried over.
      expect(await acquire(newer)).toMatchObject({
        kind: 'acquired',
        fence: 2,
        takeover: true,
        origin: me,
      });
      // Delivered again, the takeover answers the same origin.
      expect(await acquire(newer)).toMatchObject({
        kind: 'acquired',
        fence: 2,
        takeover: false,
        origin: me,
      });
      const late = await acquire(me);
      expect(late.kind).toBe('found');
      if (late.kind === 'found') {
        expect(late.record).toMatchObject({ owner: newer, fence: 2, origin: me });
      }
    });

    it('a complete that finds its own completion with the same bytes succeeds and changes nothing', async () => {
      fresh();
      const me = owner();
      await acquire(me);
      const outcome = new Uint8Array([0, 255, 1, 254, 13, 10]);
      const w = { key: 'k', owner: me, retentionMs: RETENTION };
      expect(await store.complete({ ...w, outcome })).toEqual({ ok: true });
      const done = await rawRecord(raw, store.redisKey('k'));
      const goneAt = await keyGoneAt(raw, store.redisKey('k'));
      await sleep(5);
      expect(await store.complete({ ...w, outcome: outcome.slice() })).toEqual({ ok: true });
      expect(await store.complete({ ...w, outcome: new Uint8Array([0, 255, 1]) })).toEqual(
        NOT_OWNER,
      );
      expect(await store.complete({ ...w, owner: owner(), outcome })).toEqual(NOT_OWNER);
      expect(await rawRecord(raw, store.redisKey('k'))).toEqual(done);
      expect(await keyGoneAt(raw, store.redisKey('k'))).toBe(goneAt);
    });

    it('a release that finds its own tombstone succeeds and changes nothing', async () => {
      fresh();
      const me = owner();
      await acquire(me);
      const w = { key: 'k', owner: me, retentionMs: RETENTION };
      expect(await store.release(w)).toEqual({ ok: true });
      const tomb = await rawRecord(raw, store.redisKey('k'));
      expect(await store.release(w)).toEqual({ ok: true });
      expect(await store.release({ ...w, owner: owner() })).toEqual(NOT_OWNER);
      expect(await store.complete({ ...w, outcome: new Uint8Array([1]) })).toEqual(NOT_OWNER);
      expect(await rawRecord(raw, store.redisKey('k'))).toEqual(tomb);
    });
  });
}

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('answers lost on the wire, resent by ioredis after a reconnect', () => {
  let server: RedisServer;
  let proxy: Awaited<ReturnType<typeof startLostAnswerProxy>>;
  let client: Redis;
  let raw: Redis;

  beforeAll(async () => {
    server = await startRedisServer();
    proxy = await startLostAnswerProxy(server.port);
    // The recommended options: ioredis resends what a dropped connection left unanswered.
    const options = { ...recommendedRedisOptions(TEST_CLIENT_BOUNDS), lazyConnect: true };
    client = new Redis({ host: '127.0.0.1', port: proxy.port, ...options });
    raw = new Redis({ host: '127.0.0.1', port: server.port, ...options });
    await Promise.all([client.connect(), raw.connect()]);
  });
  afterAll(async () => {
    client?.disconnect();
    raw?.disconnect();
    await proxy?.close();
    if (server) await stopRedisServer(server);
  });

  it('store calls: the resent acquire is the acquisition, the resent complete succeeds', async () => {
    const store = createRedisStore({ client, keyPrefix: randomPrefix() });
    const me = owner();
    const input = {
      key: 'k',
      fingerprint: 'fp',
      owner: me,
      leaseMs: LEASE,
      retentionMs: RETENTION,
    };
    const connectionsBefore = proxy.connections;
    proxy.loseNextAnswer();
    const acquired = await store.acquire(input);
    expect(proxy.lost, 'the first answer was lost').toBe(1);
    expect(proxy.connections, 'ioredis reconnected').toBe(connectionsBefore + 1);
    expect(acquired).toMatchObject({ kind: 'acquired', fence: 1, takeover: false, origin: me });

    const outcome = new Uint8Array(randomBytes(300));
    proxy.loseNextAnswer();
    expect(await store.complete({ key: 'k', owner: me, outcome, retentionMs: RETENTION })).toEqual({
      ok: true,
    });
    expect(proxy.lost).toBe(2);
    const record = await rawRecord(raw, store.redisKey('k'));
    expect(record).toMatchObject({ status: 'completed', owner: me, fence: 1 });
    expect(Buffer.from(record!.outcome!).equals(Buffer.from(outcome))).toBe(true);

    proxy.loseNextAnswer();
    expect(await store.release({ key: 'k', owner: me, retentionMs: RETENTION })).toEqual(NOT_OWNER);
  });

  it('execute: a lost answer on acquire and on complete still runs the operation once, no IN_PROGRESS', async () => {
    const store = createRedisStore({ client, keyPrefix: randomPrefix() });
    const idem = createIdempotency<string>({ store, heartbeatMs: false });
    let runs = 0;
    const lostBefore = proxy.lost;
    proxy.loseNextAnswer(); // the acquire's answer
    const first = await idem.execute({ key: 'order-1', scope: 't' }, async () => {
      runs++;
      proxy.loseNextAnswer(); // the complete's answer
      return 'charged';
    });
    expect(proxy.lost - lostBefore).toBe(2);
    expect(first).toEqual({ value: 'charged', replayed: false });
    const retry = await idem.execute({ key: 'order-1', scope: 't' }, async () => {
      runs++;
      return 'again';
    });
    expect(retry).toEqual({ value: 'charged', replayed: true });
    expect(runs).toBe(1);
  });
});
