/**
 * redrev adversarial review: answers lost on the wire for acquire, complete, release and
 * extend, with something else happening in Redis before ioredis's resend lands (the proxy
 * holds the reconnection). Never two executions, never a lost completion, never a newer
 * owner's record overwritten.
 */
import { createIdempotency, LeaseLostError, StoreUnavailableError } from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import { connectTo, type LossyProxy, sleep, startLossyProxy, token } from './redrev-helpers.js';
import { rawRecord } from './targets.js';

const RETENTION = 60_000;
const NOT_OWNER = { ok: false, reason: 'not_owner' };
// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

describe('redrev: lost answers, resent after something else happened', () => {
  let server: RedisServer;
  let proxy: LossyProxy;
  let viaProxy: Redis;
  let direct: Redis;
  let n = 0;
  /** Two stores on the same prefix: one behind the lossy proxy, one straight to Redis. */
  const stores = () => {
    const keyPrefix = `redrev-lost:${++n}:`;
    return {
      a: createRedisStore({ client: viaProxy, keyPrefix }),
      b: createRedisStore({ client: direct, keyPrefix }),
    };
  };
  const acq = (store: RedisStore, owner: string, leaseMs = 30_000) =>
    store.acquire({ key: 'k', fingerprint: 'fp', owner, leaseMs, retentionMs: RETENTION });

  /**
   * `promise`, marked handled: its rejection still reaches whoever awaits it, but an assertion
   * that fails before that await leaves no unhandled rejection behind.
   */
  const handled = <T>(promise: Promise<T>): Promise<T> => {
    promise.catch(() => {});
    return promise;
  };
  // A lost answer ends the proxy's connection: the client behind it reconnects. Each test
  // starts once both clients answer (bounded), not on a client still reconnecting from the
  // test before (on a loaded machine: "Stream isn't writeable").
  const ready = async (client: Redis) => {
    for (let i = 0; i < 100; i++) {
      if ((await client.ping().catch(() => undefined)) === 'PONG') return;
      await sleep(50);
    }
  };
  beforeEach(async () => {
    for (const client of [viaProxy, direct]) await ready(client);
  });

  beforeAll(async () => {
    server = await startRedisServer();
    proxy = await startLossyProxy(server.port);
    viaProxy = await connectTo(proxy.port);
    direct = await connectTo(server.port);
  });
  afterAll(async () => {
    viaProxy?.disconnect();
    direct?.disconnect();
    await proxy?.close();
    if (server) await stopRedisServer(server);
  });

  it('release: answer lost, key re-acquired by another owner before the resend: the resend leaves the new owner untouched', async () => {
    const { a, b } = stores();
    const lost0 = proxy.lost;
    const ownerA = token();
    expect((await acq(a, ownerA)).kind).toBe('acquired');
    proxy.loseNextAnswer(500);
    const releasing = handled(a.release({ key: 'k', owner: ownerA, retentionMs: RETENTION }));
    await sleep(150);
    const ownerB = token();
    expect(await acq(b, ownerB)).toMatchObject({ kind: 'acquired', fence: 2 });
    const answer = await releasing;
    expect(proxy.lost).toBeGreaterThanOrEqual(1);
    // Either answer is safe; what matters is B's record.
    expect([true, false]).toContain(answer.ok);
    expect(await rawRecord(direct, b.redisKey('k'))).toMatchObject({
      status: 'in_progress',
      owner: ownerB,
      fence: 2,
    });
    expect(
      await b.complete({
        key: 'k',
        owner: ownerB,
        outcome: new Uint8Array([2]),
        retentionMs: RETENTION,
      }),
    ).toEqual({ ok: true });
    expect(proxy.lost - lost0, 'answers lost on the wire').toBeGreaterThanOrEqual(1);
  });

  it('complete: answer lost, lease passes and a retry arrives before the resend: the retry replays, the resend succeeds', async () => {
    const { a, b } = stores();
    const lost0 = proxy.lost;
    const ownerA = token();
    expect((await acq(a, ownerA, 300)).kind).toBe('acquired');
    const outcome = new Uint8Array([9, 0, 255]);
    proxy.loseNextAnswer(700);
    const completing = handled(
      a.complete({ key: 'k', owner: ownerA, outcome, retentionMs: RETENTION }),
    );
    await sleep(400); // past A's lease
    const retry = await acq(b, token());
    expect(retry.kind).toBe('found');
    if (retry.kind === 'found') {
      expect(retry.record.status).toBe('completed');
      expect(retry.record.outcome).toEqual(outcome);
    }
    expect(await completing).toEqual({ ok: true });
    expect(await rawRecord(direct, a.redisKey('k'))).toMatchObject({
      status: 'completed',
      owner: ownerA,
      fence: 1,
    });
    expect(proxy.lost - lost0, 'answers lost on the wire').toBeGreaterThanOrEqual(1);
  });

  it('extend: answer lost; the renewal holds the key while the resend is held; then complete lands once', async () => {
    const { a, b } = stores();
    const lost0 = proxy.lost;
    const ownerA = token();
    expect((await acq(a, ownerA, 400)).kind).toBe('acquired');
    proxy.loseNextAnswer(600);
    const extending = handled(
      a.extend({ key: 'k', owner: ownerA, leaseMs: 2_000, retentionMs: RETENTION }),
    );
    await sleep(450); // past the first lease, inside the renewed one
    expect((await acq(b, token())).kind).toBe('found');
    expect(await extending).toMatchObject({ ok: true });
    expect(
      await a.complete({
        key: 'k',
        owner: ownerA,
        outcome: new Uint8Array([1]),
        retentionMs: RETENTION,
      }),
    ).toEqual({ ok: true });
    expect(await rawRecord(direct, a.redisKey('k'))).toMatchObject({
      status: 'completed',
      fence: 1,
    });
    expect(proxy.lost - lost0, 'answers lost on the wire').toBeGreaterThanOrEqual(1);
  });

  it('takeover: the new owner’s acquire answer is lost; the stale owner’s complete meanwhile is refused; the resend is the same acquisition', async () => {
    const { a, b } = stores();
    const lost0 = proxy.lost;
    const stale = token();
    expect((await acq(b, stale, 200)).kind).toBe('acquired');
    await sleep(300);
    const ownerA = token();
    proxy.loseNextAnswer(500);
    const taking = handled(acq(a, ownerA));
    await sleep(150);
    expect(
      await b.complete({
        key: 'k',
        owner: stale,
        outcome: new Uint8Array([6]),
        retentionMs: RETENTION,
      }),
    ).toEqual(NOT_OWNER);
    expect(
      await b.extend({ key: 'k', owner: stale, leaseMs: 1_000, retentionMs: RETENTION }),
    ).toEqual(NOT_OWNER);
    let taken = await taking.catch((e: unknown) => e);
    if (taken instanceof StoreUnavailableError) {
      // On a loaded machine ioredis can give up on the resend (its reconnection outlived
      // `maxRetriesPerRequest`): typed, and the acquisition may or may not have been applied.
      // The caller's own resend of the same acquisition (same owner) must then be recognized
      // as that acquisition: fence 2, not a third owner.
      await ready(viaProxy);
      taken = await acq(a, ownerA);
    }
    expect(taken).toMatchObject({ kind: 'acquired', fence: 2 });
    expect(
      await a.complete({
        key: 'k',
        owner: ownerA,
        outcome: new Uint8Array([7]),
        retentionMs: RETENTION,
      }),
    ).toEqual({ ok: true });
    expect(await rawRecord(direct, a.redisKey('k'))).toMatchObject({
      status: 'completed',
      owner: ownerA,
      fence: 2,
      outcome: new Uint8Array([7]),
    });
    expect(proxy.lost - lost0, 'answers lost on the wire').toBeGreaterThanOrEqual(1);
  });

  it('execute: lost answers on acquire, heartbeat and complete, with a competing retry during each hold: one run, every caller gets its value', async () => {
    const { a, b } = stores();
    const lost0 = proxy.lost;
    const idemA = createIdempotency<string>({ store: a, leaseMs: 900, heartbeatMs: 300 });
    const idemB = createIdempotency<string>({ store: b, leaseMs: 900 });
    let runs = 0;
    const competitor = async () => {
      const r = await idemB
        .execute({ key: 'order', scope: 't' }, async () => {
          runs++;
          return 'B';
        })
        .catch((e: unknown) => e);
      return r;
    };
    proxy.loseNextAnswer(400); // acquire
    const competing: Promise<unknown>[] = [];
    const first = handled(
      idemA.execute({ key: 'order', scope: 't' }, async () => {
        runs++;
        proxy.loseNextAnswer(400); // likely a heartbeat
        competing.push(competitor());
        await sleep(700);
        competing.push(competitor());
        proxy.loseNextAnswer(400); // complete
        return 'A';
      }),
    );
    competing.push(
      (async () => {
        await sleep(200);
        return competitor();
      })(),
    );
    expect(await first).toEqual({ value: 'A', replayed: false });
    const others = await Promise.all(competing);
    for (const other of others) {
      // A competitor either saw the execution in progress or replayed its value.
      if (other instanceof Error) expect(other.name).toBe('InProgressError');
      else expect(other).toEqual({ value: 'A', replayed: true });
    }
    expect(runs).toBe(1);
    expect(await idemB.execute({ key: 'order', scope: 't' }, async () => 'late')).toEqual({
      value: 'A',
      replayed: true,
    });
    expect(proxy.lost - lost0, 'answers lost on the wire').toBeGreaterThanOrEqual(3);
  });

  it('execute: an operation that fails (not final) and whose release answer is lost is retried exactly once more', async () => {
    const { a, b } = stores();
    const lost0 = proxy.lost;
    const idemA = createIdempotency<string>({ store: a, heartbeatMs: false });
    const idemB = createIdempotency<string>({ store: b, heartbeatMs: false });
    let runs = 0;
    proxy.loseNextAnswer(300);
    const failed = await idemA
      .execute({ key: 'flaky', scope: 't' }, async () => {
        runs++;
        proxy.loseNextAnswer(300); // the release's answer
        throw new Error('boom');
      })
      .catch((e: unknown) => e);
    // The operation's own error, or a typed lease error: never a success.
    expect(failed).toBeInstanceOf(Error);
    if (!(failed instanceof LeaseLostError)) expect((failed as Error).message).toBe('boom');
    const again = await idemB.execute({ key: 'flaky', scope: 't' }, async () => {
      runs++;
      return 'ok';
    });
    expect(again).toEqual({ value: 'ok', replayed: false });
    expect(runs).toBe(2);
    expect(proxy.lost - lost0, 'answers lost on the wire').toBeGreaterThanOrEqual(1);
  });
});
