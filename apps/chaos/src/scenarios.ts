import { sleep } from './processes.js';
import type { Profile } from './profile.js';
import type { Scenario, Stage } from './run-row.js';

const between = (min: number, max: number) => min + Math.random() * (max - min);

/** Pause between two kill cycles: room for recovery and fresh traffic. */
const CYCLE_GAP_MS = 2_000;

/** A clean window of the faulty proxy: long enough to reconnect and renew every lease. */
export const CLEAN_WINDOW_MS = 500;

/** Every row promises: no 500s, nothing outlives the bound, every client gets an answer. */
const strict = { zeroTwice: true, zeroDifferentAnswers: true, recovery: true };

/**
 * `cycles` kill -9 / pause of `pauseMs` / restart cycles of the store. Each outage, from the
 * kill to the store's first answer (the pause and the restart), is measured for the verdict.
 * `ownTime`: right before each kill, what one keyed request takes on each instance is
 * measured (`stage.warmKeyed`, three requests one after another) and taken out of that
 * recovery: for a store that is slow under load (DynamoDB Local, whose requests took most of
 * the 2 s by themselves in CI), so that recovery is what the fault cost, not one answer's
 * time. It puts those requests' time (about 1 s) before each kill.
 */
async function killStoreCycles(
  stage: Stage,
  pauseMs: number,
  cycles: number,
  ownTime = false,
): Promise<void> {
  for (let i = 0; i < cycles; i++) {
    if (i > 0) await sleep(CYCLE_GAP_MS);
    await stage.store.beforeKill?.();
    // One request's own time now, under the row's load: not part of the recovery.
    const warm = ownTime ? await stage.warmKeyed() : undefined;
    const killedAt = Date.now();
    stage.mark('store kill -9');
    await stage.store.kill9();
    await sleep(pauseMs);
    stage.mark('store restart');
    const answeredAt = (await stage.store.restart()) ?? Date.now();
    stage.outage(answeredAt - killedAt);
    stage.restored(undefined, warm);
  }
}

/**
 * `cycles` outages of the network to the store, each shorter than the lease: the proxy
 * resets every connection, old and new, for `outageMs`; the store itself stays up.
 */
async function dropStoreCycles(stage: Stage, outageMs: number, cycles: number): Promise<void> {
  const proxy = stage.store.proxy;
  if (!proxy) throw new Error('a network outage needs a proxied store');
  for (let i = 0; i < cycles; i++) {
    if (i > 0) await sleep(CYCLE_GAP_MS);
    const downAt = Date.now();
    stage.mark('network down');
    proxy.setMode({ kind: 'drop' });
    await sleep(outageMs);
    stage.mark('network back');
    proxy.setMode({ kind: 'pass' });
    stage.outage(Date.now() - downAt);
    stage.restored();
  }
}

/**
 * Random drops, delays, resets and short blackholes, back to back. From the end of one clean
 * window (a pass of {@link CLEAN_WINDOW_MS} or more) to the start of the next, no more than
 * half the lease passes, by the clock: faults and the short passes between them are one
 * outage for an execution, which needs a working connection for a renewal (every
 * `heartbeatMs`, retried 200 ms after a failure) and a reconnection (up to 200 ms). An outage
 * as long as what is left of the lease is the documented window of a second execution (core
 * README, "What remains"), reported by `redis-long-outage`, not judged here. Seen before the
 * bound: a drop, three blackholes and a drop back to back, 2.78 s without a working
 * connection against a 3 s lease renewed 0.14 s before it, and two keys ran twice (1 run in 7
 * under CPU load, and once in CI).
 */
export async function flaky(stage: Stage, durationMs: number): Promise<void> {
  const proxy = stage.store.proxy;
  if (!proxy) throw new Error('the faulty-proxy row needs a proxied store');
  const maxStretchMs = stage.profile.leaseMs / 2;
  const end = Date.now() + durationMs;
  // When the last clean window ended (the traffic before the fault was clean).
  let cleanEnd = Date.now();
  const left = () => maxStretchMs - (Date.now() - cleanEnd);
  const clean = async (ms: number) => {
    stage.mark('pass');
    proxy.setMode({ kind: 'pass' });
    await sleep(ms);
    cleanEnd = Date.now();
  };
  // One phase of the stretch, cut short where the stretch would pass its bound.
  const phase = async (
    what: string,
    mode: Parameters<typeof proxy.setMode>[0],
    ms: number,
    then?: () => void,
  ) => {
    stage.mark(what);
    proxy.setMode(mode);
    then?.();
    await sleep(Math.max(0, Math.min(ms, left())));
  };
  while (Date.now() < end) {
    if (left() <= 0) {
      await clean(between(CLEAN_WINDOW_MS, 1_000));
      continue;
    }
    const roll = Math.random();
    if (roll < 0.45) {
      const ms = between(200, 600);
      // A short pass is part of the stretch: too short to count on a renewal.
      if (ms >= CLEAN_WINDOW_MS) await clean(ms);
      else await phase('short pass', { kind: 'pass' }, ms);
    } else if (roll < 0.65) {
      const ms = Math.round(between(20, 300));
      await phase(`delay ${ms} ms`, { kind: 'delay', ms }, between(200, 600));
    } else if (roll < 0.8) {
      await phase('reset half', { kind: 'pass' }, between(200, 600), () => proxy.dropSome(0.5));
    } else if (roll < 0.92) {
      await phase('drop', { kind: 'drop' }, between(100, 800));
    } else {
      await phase('blackhole', { kind: 'blackhole' }, between(200, 1_000));
    }
  }
  proxy.setMode({ kind: 'pass' });
  stage.restored();
}

/** Kills (or SIGTERMs) each instance in turn and starts a fresh one in its place. */
async function appCycles(stage: Stage, cycles: number, how: 'kill' | 'term'): Promise<void> {
  for (let i = 0; i < cycles; i++) {
    if (i > 0) await sleep(CYCLE_GAP_MS);
    const index = i % stage.apps.length;
    // Mid-request: wait (at most 3 s) until the victim has requests in flight.
    const busyBy = Date.now() + 3_000;
    while (stage.inFlightAt(index) < 2 && Date.now() < busyBy) await sleep(5);
    if (how === 'kill') {
      await stage.killApp(index);
      await sleep(1_000);
    } else {
      const code = await stage.termApp(index);
      if (code !== 0) stage.broken(`instance ${index} exited ${code} after SIGTERM (promise: 0)`);
    }
    const fresh = await stage.startApp(index);
    stage.restored([fresh.url]);
  }
}

/** The rows, in the order of the table. */
export const scenarios: readonly Scenario[] = [
  {
    id: 'redis-aof-kill',
    fault: 'Redis kill -9, restart, AOF always (outage < lease)',
    store: 'redis-aof',
    instances: 2,
    requests: (p) => p.requests,
    faultMs: (p) => p.kills * (p.shortOutageMs + CYCLE_GAP_MS),
    // Half the keys streamed: the late-answer, keep-alive and cut paths are streams'.
    streamEvery: 2,
    promises: () => strict,
    inject: (s) => killStoreCycles(s, s.profile.shortOutageMs, s.profile.kills),
  },
  {
    id: 'redis-volatile-kill',
    fault: 'Redis kill -9, restart, no persistence',
    store: 'redis-volatile',
    instances: 2,
    requests: (p) => p.requests,
    faultMs: (p) => p.kills * (p.shortOutageMs + CYCLE_GAP_MS),
    // Records die with Redis: a second execution, and a different answer for it, are the
    // documented consequence, not a broken promise.
    promises: () => ({ ...strict, zeroTwice: false, zeroDifferentAnswers: false }),
    inject: (s) => killStoreCycles(s, s.profile.shortOutageMs, s.profile.kills),
  },
  {
    id: 'redis-long-outage',
    fault: 'Redis down (long outage), then back, AOF always',
    store: 'redis-aof',
    instances: 2,
    requests: (p) => p.requests,
    faultMs: (p) => p.longOutageMs,
    // Longer than the lease: a takeover may run a key again (the documented window).
    promises: () => ({ ...strict, zeroTwice: false }),
    inject: (s) => killStoreCycles(s, s.profile.longOutageMs, 1),
  },
  {
    id: 'redis-blackhole',
    fault: 'Redis connection silent (blackhole), then heals',
    store: 'redis-aof',
    instances: 2,
    requests: (p) => p.requests,
    faultMs: (p) => p.blackholeMs,
    promises: () => ({ ...strict, zeroTwice: false }),
    async inject(s) {
      s.store.proxy?.setMode({ kind: 'blackhole' });
      await sleep(s.profile.blackholeMs);
      s.store.proxy?.setMode({ kind: 'pass' });
      s.restored();
    },
  },
  {
    id: 'redis-flaky-proxy',
    fault: 'faulty proxy to Redis (drops, resets, delays, short blackholes)',
    store: 'redis-aof',
    instances: 2,
    requests: (p) => p.flakyRequests,
    faultMs: (p) => p.flakyMs,
    // Half the keys streamed: the late-answer, keep-alive and cut paths are streams'.
    streamEvery: 2,
    promises: () => strict,
    inject: (s) => flaky(s, s.profile.flakyMs),
  },
  {
    id: 'app-kill',
    fault: 'app kill -9 mid-request, restart (Redis AOF)',
    store: 'redis-aof',
    instances: 2,
    requests: (p) => p.requests,
    faultMs: (p) => p.kills * (1_000 + CYCLE_GAP_MS + 1_000),
    // The executor died: a takeover after its lease may run the model again (documented).
    promises: () => ({ ...strict, zeroTwice: false }),
    inject: (s) => appCycles(s, s.profile.kills, 'kill'),
  },
  {
    id: 'app-sigterm',
    fault: 'app SIGTERM mid-request, restart (Redis AOF)',
    store: 'redis-aof',
    instances: 2,
    requests: (p) => p.requests,
    faultMs: (p) => p.kills * (CYCLE_GAP_MS + 2_000),
    // Half the keys streamed: the late-answer, keep-alive and cut paths are streams'.
    streamEvery: 2,
    promises: () => strict,
    inject: (s) => appCycles(s, s.profile.kills, 'term'),
  },
  {
    id: 'dynamodb-kill',
    fault: 'DynamoDB Local kill -9, restart, on disk',
    store: 'dynamodb',
    instances: 2,
    // DynamoDB Local (one JVM, cold after each restart) is far slower than Redis: a sixth of
    // the load, so the row measures the app and not the emulator's throughput. At a third
    // (267 keys, 534 clients) the JVM took 60 to 100 % of a core on the 2-core machine while
    // the apps and the clients took the rest, and the app's admission limit found room for
    // about 25 requests a second: recovery 2.6 to 4.3 s and a few keys twice in dynamodb-drop,
    // where at a sixth both rows passed (recovery 0.3 and 0.6 s).
    requests: (p) => Math.ceil(p.requests / 6),
    faultMs: (p) => p.shortOutageMs + 5_000,
    // A JVM restart takes longer than the 3 s lease: a takeover may run a key again.
    promises: () => ({ ...strict, zeroTwice: false }),
    inject: (s) => killStoreCycles(s, s.profile.shortOutageMs, 1, true),
  },
  {
    id: 'dynamodb-drop',
    fault: 'DynamoDB unreachable (connections reset) for less than the lease',
    store: 'dynamodb',
    instances: 2,
    // As dynamodb-kill: a sixth of the load for the emulator's sake.
    requests: (p) => Math.ceil(p.requests / 6),
    faultMs: (p) => p.kills * (p.shortOutageMs + CYCLE_GAP_MS),
    // The store stays up and the outage is shorter than the lease: the promise holds here,
    // on DynamoDB too (dynamodb-kill cannot judge it, its JVM restart outlasts the lease).
    // Half the keys streamed: the late-answer, keep-alive and cut paths are streams'.
    streamEvery: 2,
    promises: () => strict,
    // Not in the short profile, whose run limit the rows above already fill.
    fullOnly: true,
    inject: (s) => dropStoreCycles(s, s.profile.shortOutageMs, s.profile.kills),
  },
  {
    id: 'postgres-kill',
    fault: 'PostgreSQL kill -9, restart, fsync on (outage < lease)',
    store: 'postgres',
    instances: 2,
    requests: (p) => p.requests,
    faultMs: (p) => p.kills * (p.shortOutageMs / 2 + 1_000 + CYCLE_GAP_MS),
    // Committed rows survive a kill -9 (fsync, synchronous_commit). The server answers again,
    // crash recovery included, 0.1 to 0.35 s after its restart on an idle 2-core machine, but
    // 0.5 to 1 s (writes prompt after up to 3 s) while CI's test lanes load it: after a 1.5 s
    // pause that outage passed what is left of the lease (2.7 s at worst with the app's
    // heartbeat of a tenth) and a key ran twice, the documented window, in about half the
    // loaded runs. So the pause is half the short outage, and the verdict measures each
    // outage (kill to first answer) against the window the promise covers (outageWindowMs).
    // The full load: both rows kept up with 800 keys (recovery 1.1 and 0.9 s).
    // Half the keys streamed: the late-answer, keep-alive and cut paths are streams'.
    streamEvery: 2,
    promises: () => strict,
    inject: (s) => killStoreCycles(s, s.profile.shortOutageMs / 2, s.profile.kills),
  },
  {
    id: 'postgres-drop',
    fault: 'PostgreSQL unreachable (connections reset) for less than the lease',
    store: 'postgres',
    instances: 2,
    requests: (p) => p.requests,
    faultMs: (p) => p.kills * (p.shortOutageMs + CYCLE_GAP_MS),
    // Half the keys streamed: the late-answer, keep-alive and cut paths are streams'.
    streamEvery: 2,
    promises: () => strict,
    // Not in the short profile: CI keeps one PostgreSQL row, postgres-kill (the one that
    // restarts the server and found a crash of the app; about 15 s).
    fullOnly: true,
    inject: (s) => dropStoreCycles(s, s.profile.shortOutageMs, s.profile.kills),
  },
  {
    id: 'memory-1mib',
    fault: 'memory store, answers of 1 MiB',
    store: 'memory',
    instances: 1,
    requests: (p) => p.memoryAnswers,
    // What is judged is memory, not contention or throughput: one client per key, ten
    // answers a second. At 25 a second the 2-core development machine under load fell
    // behind (a 1 MiB answer took 350 ms end to end, 150 ms of it the model's pauses), and
    // the backlog of timed-out retries measured the CPU instead of the store's bound.
    clientsPerKey: 1,
    faultMs: (p) => p.memoryAnswers * 100,
    // Once the byte budget is full of 24 h answers, the store takes no new key: `503
    // store-full` is its documented answer (it never drops a live record to make room), and
    // the table counts those keys apart, as "(n full)".
    promises: (p: Profile) => ({
      ...strict,
      recovery: false,
      rssLimitMiB: p.rssLimitMiB,
      storeFullIsAnAnswer: true,
      // ...but only once the store took keys: the app's default budget (128 MiB) holds at
      // most 128 answers of 1 MiB; half of that must complete, so a store that called itself
      // full too early (a byte count that leaks, say) breaks the row.
      minCompleted: Math.min(p.memoryAnswers, 64),
    }),
    promptExtra: 'size:1048576',
    inject: async () => undefined,
  },
];
