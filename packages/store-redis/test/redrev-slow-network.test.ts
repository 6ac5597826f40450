/**
 * redrev adversarial review: a slow network (a proxy adding latency, up to longer than the
 * lease) and a Redis silent for longer than the lease while a completion and a competitor's
 * acquire both wait on it. Past the lease two executions may run (documented: an executor
 * that outlives its lease); what must hold is that the stale one never overwrites the newer
 * owner's record, gets a typed error, and every replay returns the one recorded outcome.
 */
import { createIdempotency, LeaseLostError } from '@idem/core';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import {
  type RedisServer,
  redisBinariesAvailable,
  signalRedisServer,
  startRedisServer,
  stopRedisServer,
} from './redis-servers.js';
import {
  COMMAND_TIMEOUT,
  connectTo,
  type DelayProxy,
  settle,
  sleep,
  startDelayProxy,
} from './redrev-helpers.js';
import { rawRecord } from './targets.js';

// Throws (fails the file) when redis-server or redis-cli is missing: these tests never skip.
redisBinariesAvailable();

/** The one record under `prefix` (the engine's storage keys are digests). */
async function recordOf(client: Redis, prefix: string) {
  const keys = (await client.keys(`${prefix}*`)).filter((k) => !k.endsWith(':fence'));
  expect(keys).toHaveLength(1);
  return rawRecord(client, keys[0] as string);
}
const RETENTION = 60_000;

describe('redrev: slow network and a silence longer than the lease', () => {
  let server: RedisServer;
  let proxy: DelayProxy;
  let slow: Redis;
  let direct: Redis;
  let n = 0;
  beforeAll(async () => {
    server = await startRedisServer();
    proxy = await startDelayProxy(server.port, 0);
    slow = await connectTo(proxy.port);
    direct = await connectTo(server.port);
  });
  afterAll(async () => {
    slow?.disconnect();
    direct?.disconnect();
    await proxy?.close();
    if (server) {
      await signalRedisServer(server, 'SIGCONT');
      await stopRedisServer(server);
    }
  });
  const stores = () => {
    const keyPrefix = `redrev-slow:${++n}:`;
    return {
      a: createRedisStore({ client: slow, keyPrefix }),
      b: createRedisStore({ client: direct, keyPrefix }),
    };
  };

  // FINDING (MEDIUM; fixed in core: a renewal is due one heartbeat after the last renewing call
  // was sent, not answered): under a slow network whose round trip (600 ms) is well inside the lease
  // (1.5 s, heartbeat 500 ms), an execution that Redis keeps renewing loses its key. The
  // engine's lease estimate starts when the acquire was SENT (t=0, so 1,500 ms), but the
  // first heartbeat is scheduled heartbeatMs after the acquire was ANSWERED (604 + 500 ms) and
  // itself takes a round trip: it is still in flight when the watchdog fires at 1,500 ms, so
  // the engine declares `lease_lost` (phase heartbeat) and stops renewing, although the
  // renewal landed (Redis answered ok at 1,707 ms). The lease then really passes, a retry
  // takes the key over and runs the operation a second time, and the first execution's
  // completion is refused (LeaseLostError). It needs 2 x RTT > lease - heartbeat (RTT >
  // lease/3 with the default heartbeat), so the default 30 s lease with a 2 s command timeout
  // is immune, but a few-second lease over a cross-region or congested link is not.
  // Reproduce: this test (delay proxy, 300 ms each way). Fix (core lease keeper): schedule
  // each renewal so that it can return before the estimate (e.g. at estimate - heartbeatMs,
  // or answer + heartbeatMs - measured RTT), and do not end the renewals when a renewal that
  // was in flight when the watchdog fired comes back ok (it is owner-checked: ok proves
  // nobody took the key over); at least say in the README that the round trip must stay
  // below (lease - heartbeat) / 2.
  it('latency 300 ms each way, lease 1.5 s, heartbeat 500 ms: a 3 s execution keeps its lease, a direct competitor never runs', async () => {
    const { a, b } = stores();
    proxy.delayMs = 300;
    try {
      const idemA = createIdempotency<string>({
        store: a,
        leaseMs: 1_500,
        heartbeatMs: 500,
        retentionMs: RETENTION,
      });
      const idemB = createIdempotency<string>({ store: b, leaseMs: 1_500, retentionMs: RETENTION });
      let runs = 0;
      const seen: string[] = [];
      const first = idemA.execute({ key: 'k', scope: 't' }, async () => {
        runs++;
        for (let i = 0; i < 12; i++) {
          seen.push(
            await idemB
              .execute({ key: 'k', scope: 't' }, async () => {
                runs++;
                return 'B';
              })
              .then(
                () => 'ran',
                (e: unknown) => (e as Error).name,
              ),
          );
          await sleep(250);
        }
        return 'A';
      });
      expect(await first).toEqual({ value: 'A', replayed: false });
      expect(seen.every((s) => s === 'InProgressError')).toBe(true);
      expect(runs).toBe(1);
    } finally {
      proxy.delayMs = 0;
    }
  });

  it('latency 400 ms each way (round trip longer than the 500 ms lease): the stale executor never overwrites the newer owner, gets LeaseLostError, replays agree', async () => {
    const { a, b } = stores();
    proxy.delayMs = 400;
    try {
      const idemA = createIdempotency<string>({
        store: a,
        leaseMs: 500,
        heartbeatMs: 150,
        retentionMs: RETENTION,
      });
      const idemB = createIdempotency<string>({ store: b, leaseMs: 5_000, retentionMs: RETENTION });
      const fences: Record<string, number> = {};
      const first = settle(
        () =>
          idemA.execute({ key: 'k', scope: 't' }, async ({ fence }) => {
            fences.A = fence;
            await sleep(900);
            return 'A';
          }),
        10_000,
      );
      // A's acquire reaches Redis 400 ms after it was sent: B starts once it has.
      await sleep(500);
      // B retries straight to Redis until it gets an answer other than in progress.
      let second:
        | Awaited<ReturnType<typeof settle<{ value: string; replayed: boolean }>>>
        | undefined;
      for (let i = 0; i < 40; i++) {
        await sleep(100);
        const r = await settle(
          () =>
            idemB.execute({ key: 'k', scope: 't' }, async ({ fence }) => {
              fences.B = fence;
              return 'B';
            }),
          10_000,
        );
        if (r.ok || (r.error as Error).name !== 'InProgressError') {
          second = r;
          break;
        }
      }
      const one = await first;
      const record = await recordOf(direct, `redrev-slow:${n}:`);
      const recorded = Buffer.from(record?.outcome ?? []).toString();
      console.log(
        `[redrev] slow: A ${one.ok ? 'ok' : (one.error as Error).name} fence ${fences.A}, B ${second?.ok ? JSON.stringify(second.value) : (second?.error as Error)?.name} fence ${fences.B}, record fence ${record?.fence}`,
      );
      expect(record?.status).toBe('completed');
      if (fences.B !== undefined) {
        // B ran. Either A never ran (its acquisition was answered past the last tenth of its
        // lease: refused, LeaseLostError, given back) or both ran (the executor outlived its
        // lease): B took over with a higher fence, and A's late completion was refused, typed,
        // without touching B's record.
        if (fences.A !== undefined) expect(fences.B).toBeGreaterThan(fences.A);
        expect(one.error).toBeInstanceOf(LeaseLostError);
        expect(record?.fence).toBe(fences.B);
        expect(recorded).toContain('B');
      } else {
        expect(one.ok).toBe(true);
        expect(second?.value).toEqual({ value: 'A', replayed: true });
      }
      const replay = await idemB.execute({ key: 'k', scope: 't' }, async () => 'C');
      expect(replay.replayed).toBe(true);
      expect(replay.value).toBe(fences.B !== undefined ? 'B' : 'A');
    } finally {
      proxy.delayMs = 0;
    }
  });

  it('Redis silent for 2 s (lease 1 s) with the completion and a competitor’s acquire both queued: no caller gets a first-hand value other than the recorded one, losers get typed errors', async () => {
    // Under a loaded machine A's acquisition can take long enough that its execution is refused
    // at the runway (LeaseLostError before the operation), or fail on a connection still
    // reconnecting (StoreUnavailableError): the scenario never happened, and the competitor
    // never queued. Such attempts are tried again on a fresh key, three at most,
    // and one attempt must play the scenario out.
    let idemB: ReturnType<typeof createIdempotency<string>> | undefined;
    let one: Awaited<ReturnType<typeof settle<{ value: string; replayed: boolean }>>> | undefined;
    let two: Awaited<ReturnType<typeof settle<{ value: string; replayed: boolean }>>> | undefined;
    for (let attempt = 0; attempt < 3 && !two; attempt++) {
      // The slow client may still be reconnecting after the test before (a command that timed
      // out behind its 400 ms latency): the scenario starts on a connection that answered,
      // and still answers once any command sent before could have timed out.
      for (let i = 0, answered = 0; i < 50 && answered < 2; i++) {
        const pong = await slow.ping().catch(() => undefined);
        answered = pong === 'PONG' ? answered + 1 : 0;
        await sleep(answered === 1 ? COMMAND_TIMEOUT : 100);
      }
      const { a, b } = stores();
      const idemA = createIdempotency<string>({
        store: a,
        leaseMs: 1_000,
        heartbeatMs: false,
        retentionMs: RETENTION,
      });
      idemB = createIdempotency<string>({ store: b, leaseMs: 5_000, retentionMs: RETENTION });
      const second: Promise<
        Awaited<ReturnType<typeof settle<{ value: string; replayed: boolean }>>>
      >[] = [];
      const first = settle(
        () =>
          idemA.execute({ key: 'k', scope: 't' }, async () => {
            await signalRedisServer(server, 'SIGSTOP');
            // The competitor's acquire waits on the same silent Redis.
            second.push(
              settle(
                () => (idemB as typeof idemA).execute({ key: 'k', scope: 't' }, async () => 'B'),
                10_000,
              ),
            );
            setTimeout(() => void signalRedisServer(server, 'SIGCONT'), 2_000);
            return 'A';
          }),
        12_000,
      );
      one = await first;
      await sleep(200);
      two = await second[0];
      if (!two) {
        // Refused or failed before the operation (the acquisition late, or the connection
        // not ready): typed, and nothing ran.
        expect(one?.ok).toBe(false);
        expect((one?.error as Error | undefined)?.name).toMatch(
          /^(LeaseLostError|StoreUnavailableError)$/,
        );
      }
    }
    expect(two).toBeDefined();
    const values: string[] = [];
    const errors: string[] = [];
    for (const r of [one, two]) {
      if (!r) continue;
      expect(r.hung).toBeFalsy();
      if (r.ok) values.push(`${r.value?.value}${r.value?.replayed ? ' (replay)' : ''}`);
      else {
        const error = r.error as Error;
        errors.push(`${error.name}: ${error.message}`);
        expect(error.name).toMatch(/LeaseLostError|StoreUnavailableError|InProgressError/);
      }
    }
    // Retry until a final outcome (bounded).
    let final: { value: string; replayed: boolean } | undefined;
    for (let i = 0; i < 60 && !final; i++) {
      final = await (idemB as NonNullable<typeof idemB>)
        .execute({ key: 'k', scope: 't' }, async () => 'C')
        .catch(async () => {
          await sleep(100);
          return undefined;
        });
    }
    console.log(
      `[redrev] silent > lease: first callers got ${JSON.stringify(values)} ${JSON.stringify(errors)}, final ${JSON.stringify(final)}`,
    );
    expect(final).toBeDefined();
    // Every caller that got a first-hand (not replayed) value got the recorded one.
    for (const v of values) if (!v.endsWith('(replay)')) expect(v).toBe(final?.value);
    if (final?.replayed === false)
      expect(values.filter((v) => !v.endsWith('(replay)'))).toEqual([]);
  });
});
