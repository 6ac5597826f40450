import { setTimeout as sleep } from 'node:timers/promises';
import { createIdempotency, type IdemEvent, type IdempotencyStore } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, createOtelListener, METRIC, SPAN } from '../src/index.js';
import { countingOpen, telemetry } from './support/telemetry.js';

// otelrev: the listener's only per-execution state is its open `idem.execute` spans, closed at
// `execution_end`, which core promises once per `miss`. A bounded soak of the real engine on
// a store that fails, times out, applies then fails, and answers late (15% of calls), with
// executions that throw, outlive their lease, are released, end unrecorded or are dropped:
// every miss ends once, no span stays open, `idem.leases.in_flight` comes back to 0.
// (Run by hand with ROUNDS=40000 KEYS=3000: 180k events, 17.5k acquisitions, each seed.)

const ROUNDS = Number(process.env.OTELREV_ROUNDS ?? 2_000);
const KEYS = Number(process.env.OTELREV_KEYS ?? 200);
const FAULTS = 0.15;

/** xorshift32: the same run for a seed. */
function random(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/** `inner`, with each call failing, timing out or answering late at `rate` (four ways). */
function faulty(inner: IdempotencyStore, r: () => number, rate: number): IdempotencyStore {
  const wrap =
    <I, O>(call: (input: I) => Promise<O>) =>
    async (input: I): Promise<O> => {
      const x = r();
      if (x < rate * 0.25) throw new Error('ECONNRESET before send');
      if (x < rate * 0.5) {
        await call(input);
        throw new Error('applied, answer lost');
      }
      if (x < rate * 0.75) {
        await sleep(80 + r() * 80); // past storeTimeoutMs, then applied
        return call(input);
      }
      if (x < rate) {
        const answer = call(input);
        await sleep(80 + r() * 80); // applied at once, answered late
        return answer;
      }
      return call(input);
    };
  return {
    capabilities: inner.capabilities,
    acquire: wrap((input) => inner.acquire(input)),
    complete: wrap((input) => inner.complete(input)),
    release: wrap((input) => inner.release(input)),
    extend: wrap((input) => inner.extend(input)),
    get: (key) => inner.get(key),
  };
}

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

describe('otelrev soak: the engine under store faults', () => {
  it('every miss ends once, no execute span stays open, in-flight back to 0', async () => {
    const r = random(Number(process.env.OTELREV_SEED ?? 1));
    const t = telemetry();
    current = t;
    const counted = countingOpen(t.tracer, SPAN.execute);
    const spans = createOtelListener({ tracer: counted.tracer, metrics: false });
    const misses = new Map<string, number>();
    const ends = new Map<string, number>();
    const orphanEnds: string[] = [];
    let events = 0;
    const listener = (event: IdemEvent) => {
      events++;
      if (event.type === 'miss' || event.type === 'execution_end') {
        const key = `${event.storageKey}#${event.fence}`;
        const seen = event.type === 'miss' ? misses : ends;
        if (event.type === 'execution_end' && !misses.has(key)) orphanEnds.push(key);
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }
      spans(event);
      t.listener(event); // metrics (and spans of its own) through the shared helper
    };
    const idem = createIdempotency<unknown>({
      store: faulty(createMemoryStore(), r, FAULTS),
      leaseMs: 400,
      heartbeatMs: 120,
      storeTimeoutMs: 50,
      maxHoldMs: 1_500,
      onEvent: listener,
    });
    const running = new Set<Promise<unknown>>();
    for (let i = 0; i < ROUNDS; i++) {
      const operation = `POST /op/${Math.floor(r() * 5)}`;
      const request = {
        key: `k-${Math.floor(r() * KEYS)}`,
        scope: ['t', operation],
        operation,
        fingerprint: r() < 0.1 ? 'other' : 'f',
      };
      const how = r();
      const work =
        r() < 0.5
          ? idem.execute(request, async ({ signal }) => {
              if (how < 0.2) throw new Error('the operation failed');
              if (how < 0.3)
                await sleep(300 + r() * 400); // past the lease, renewed
              else if (how < 0.35)
                await new Promise((resolve) => signal.addEventListener('abort', resolve));
              return i;
            })
          : (async () => {
              const begun = await idem.begin(request);
              if (begun.kind !== 'acquired') return;
              const { execution } = begun;
              await sleep(r() * 20);
              if (how < 0.4) await execution.complete({ meta: {}, body: new Uint8Array([1]) });
              else if (how < 0.7) await execution.release();
              else if (how < 0.8)
                await execution.completeNotRecorded('too_large', { size: 2, limit: 1 });
              // else dropped: its heartbeats end at maxHoldMs
            })();
      const tracked: Promise<unknown> = work.catch(() => {}).finally(() => running.delete(tracked));
      running.add(tracked);
      if (running.size >= 100) await Promise.race(running);
    }
    await Promise.all(running);
    await idem.drain(10_000);
    // Dropped executions end at maxHoldMs (1.5 s): wait for the last, at most 20 s.
    const balanced = () => [...misses].every(([key, n]) => ends.get(key) === n);
    for (let waited = 0; waited < 20_000 && !(balanced() && counted.open() === 0); waited += 100)
      await sleep(100);
    expect(misses.size).toBeGreaterThan(ROUNDS / 20);
    expect(events).toBeGreaterThan(ROUNDS * 2);
    expect([...misses].filter(([key, n]) => ends.get(key) !== n)).toEqual([]);
    expect(orphanEnds).toEqual([]);
    expect(counted.open()).toBe(0);
    const inFlight = (await t.metrics()).get(METRIC.inFlight) ?? [];
    expect(inFlight.length).toBeGreaterThan(0);
    expect(inFlight.filter((p) => p.value !== 0).map((p) => p.attributes[ATTR.operation])).toEqual(
      [],
    );
  }, 120_000);
});
