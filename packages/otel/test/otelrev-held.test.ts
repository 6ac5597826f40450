import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { createIdempotency, createOutcomeCodec, type IdempotencyOptions } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { createRedisStore, recommendedRedisOptions } from '@idem/store-redis';
import { startPrivateRedis } from '@idem/test-ledger';
import type { Meter, Span, Tracer } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ATTR, createOtelListener, METRIC, SPAN } from '../src/index.js';
import { countingOpen, telemetry } from './support/telemetry.js';

// otelrev (second pass): attacks that held, each kept as the guarantee it checks. Real SDK,
// the engine on the memory store, the shared Redis (127.0.0.1:6379, keys under a prefix of
// this run, removed at the end) and a private redis-server stopped mid-execution.

const PREFIX = `otelrev-held-${process.pid}-${Date.now()}:`;
const shared = new Redis({ host: '127.0.0.1', port: 6379, ...recommendedRedisOptions() });
shared.on('error', () => {});

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});
beforeAll(async () => {
  if (shared.status !== 'ready') await once(shared, 'ready');
});
afterAll(async () => {
  // Bounded: this run writes a few hundred keys.
  for (let i = 0; i < 50; i++) {
    const keys = await shared.keys(`${PREFIX}*`);
    if (keys.length === 0) break;
    await shared.del(...keys.slice(0, 500));
  }
  shared.disconnect();
});

function setup(options: Parameters<typeof telemetry>[0] = {}) {
  const t = telemetry(options);
  current = t;
  return t;
}

const engine = (onEvent: IdempotencyOptions['onEvent'], more: Partial<IdempotencyOptions> = {}) =>
  createIdempotency<unknown>({
    store: createRedisStore({ client: shared, keyPrefix: PREFIX }),
    retentionMs: 60_000,
    onEvent,
    ...more,
  });

/** Runs `fn` until it answers true, every 25 ms, for at most `ms`. */
async function until(fn: () => boolean, ms: number): Promise<void> {
  for (let waited = 0; waited < ms && !fn(); waited += 25) await sleep(25);
}

describe('otelrev held: what reaches spans and metrics', () => {
  it('no raw key, tenant, fingerprint, body or operation error on any span or metric, for every result', async () => {
    const t = setup();
    const idem = engine(t.listener, { leaseMs: 400, heartbeatMs: false });
    const scope = ['tenant-SECRET-T', 'POST /charges'];
    const request = {
      key: 'key-SECRET-K1',
      scope,
      operation: 'POST /charges',
      fingerprint: 'fp-SECRET-F',
    };
    const value = { card: 'SECRET-BODY-4242' };
    await idem.execute(request, async () => value); // miss, completed
    await idem.execute(request, async () => value); // hit
    await expect(
      idem.execute({ ...request, fingerprint: 'fp-SECRET-G' }, async () => value),
    ).rejects.toMatchObject({ code: 'MISMATCH' });
    // An operation error quoting secrets: the key is released.
    await expect(
      idem.execute({ ...request, key: 'key-SECRET-K2' }, async () => {
        throw new Error('SECRET-ERR card 4242 declined');
      }),
    ).rejects.toThrow('SECRET-ERR');
    // A conflict, then a takeover and a lost lease.
    const held = await idem.begin({ ...request, key: 'key-SECRET-K3' });
    await expect(
      idem.execute({ ...request, key: 'key-SECRET-K3' }, async () => value),
    ).rejects.toMatchObject({ code: 'IN_PROGRESS' });
    await sleep(450);
    const taker = await idem.begin({ ...request, key: 'key-SECRET-K3' });
    if (held.kind !== 'acquired' || taker.kind !== 'acquired') throw new Error('acquired');
    await expect(
      held.execution.complete({ meta: { note: 'SECRET-META' }, body: new Uint8Array([7]) }),
    ).rejects.toMatchObject({ code: 'LEASE_LOST' });
    await taker.execution.complete({ meta: {}, body: new TextEncoder().encode('SECRET-BODY') });
    // An outcome sealed with a key the reader lacks.
    const sealed = (id: string, fill: number) =>
      createOutcomeCodec({ keys: [{ id, key: new Uint8Array(32).fill(fill) }] });
    await engine(undefined, { outcomeCodec: sealed('w', 1) }).execute(
      { ...request, key: 'key-SECRET-K4' },
      async () => value,
    );
    await expect(
      engine(t.listener, { outcomeCodec: sealed('r', 2) }).execute(
        { ...request, key: 'key-SECRET-K4' },
        async () => value,
      ),
    ).rejects.toMatchObject({ code: 'OUTCOME_CORRUPT' });
    // A store that is down (its server stopped: nothing listens on the port).
    const stopped = await startPrivateRedis();
    await stopped.stop();
    const down = new Redis({
      host: '127.0.0.1',
      port: stopped.port,
      ...recommendedRedisOptions({ commandTimeoutMs: 200 }),
      lazyConnect: true,
    });
    down.on('error', () => {});
    try {
      await expect(
        createIdempotency({
          store: createRedisStore({ client: down, keyPrefix: PREFIX }),
          storeTimeoutMs: 500,
          onEvent: t.listener,
        }).execute({ ...request, key: 'key-SECRET-K5' }, async () => value),
      ).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    } finally {
      down.disconnect();
    }

    const results = new Set(t.spans(SPAN.acquire).map((s) => s.attributes[ATTR.result]));
    expect([...results].sort()).toEqual(
      ['conflict', 'hit', 'mismatch', 'miss', 'outcome_corrupt', 'store_error'].sort(),
    );
    expect(t.spans(SPAN.execute).map((s) => s.attributes[ATTR.result])).toContain('lease_lost');
    const texts: string[] = [];
    for (const span of t.spans()) {
      texts.push(span.name, JSON.stringify(span.attributes), span.status.message ?? '');
      for (const event of span.events) texts.push(event.name, JSON.stringify(event.attributes));
    }
    const points = [...(await t.metrics()).values()].flat();
    for (const point of points) texts.push(JSON.stringify(point.attributes));
    expect(texts.filter((text) => text.includes('SECRET'))).toEqual([]);
    // Metric attributes: bounded names only (never the storage key).
    const names = new Set(points.flatMap((p) => Object.keys(p.attributes)));
    const bounded = [
      ATTR.operation,
      ATTR.result,
      ATTR.takeover,
      ATTR.storeMethod,
      ATTR.storeOutcome,
      ATTR.leaseLostPhase,
    ];
    expect([...names].filter((name) => !bounded.includes(name as never))).toEqual([]);
  }, 20_000);

  it("concurrent requests on Redis: every idem span is in its own request's trace", async () => {
    const t = setup();
    const idem = engine(t.listener, {
      leaseMs: 600,
      heartbeatMs: 150, // renewals from the engine's shared heartbeat queue
      wait: { timeoutMs: 5_000, pollMs: 40 }, // polls from timers: conflicts, then hits
    });
    const REQUESTS = 36;
    const storageKeyOf = new Map<string, unknown>(); // trace id -> the request's storage key
    const rootOf = new Map<string, string>(); // trace id -> key
    await Promise.all(
      Array.from({ length: REQUESTS }, (_, i) =>
        t.tracer.startActiveSpan(`request ${i}`, async (root: Span) => {
          const key = `concurrent-${i % 12}`;
          rootOf.set(root.spanContext().traceId, key);
          try {
            await idem.execute({ key, scope: ['t'], operation: 'POST /c' }, async () => {
              await sleep(300);
              return i;
            });
          } finally {
            root.end();
          }
        }),
      ),
    );
    const idemSpans = t.spans().filter((s) => s.name.startsWith('idem.'));
    expect(idemSpans.length).toBeGreaterThan(REQUESTS * 2);
    for (const span of idemSpans) {
      const traceId = span.spanContext().traceId;
      expect(rootOf.has(traceId), `${span.name} outside every request`).toBe(true);
      const seen = storageKeyOf.get(traceId);
      if (seen === undefined) storageKeyOf.set(traceId, span.attributes[ATTR.storageKey]);
      else expect(span.attributes[ATTR.storageKey], span.name).toBe(seen);
    }
    // Requests of one key share its storage key; requests of different keys do not.
    const byKey = new Map<string, Set<unknown>>();
    for (const [traceId, key] of rootOf) {
      const set = byKey.get(key) ?? new Set();
      set.add(storageKeyOf.get(traceId));
      byKey.set(key, set);
    }
    expect([...byKey.values()].every((set) => set.size === 1)).toBe(true);
    expect(new Set([...byKey.values()].map((set) => [...set][0])).size).toBe(12);
    // Every complete span is the child of the execute span of its own trace and fence.
    const executes = t.spans(SPAN.execute);
    expect(executes).toHaveLength(12);
    for (const complete of t.spans(SPAN.complete)) {
      const parent = executes.find(
        (s) => s.spanContext().spanId === complete.parentSpanContext?.spanId,
      );
      expect(parent?.spanContext().traceId).toBe(complete.spanContext().traceId);
      expect(parent?.attributes[ATTR.fence]).toBe(complete.attributes[ATTR.fence]);
    }
    expect(await t.point(METRIC.inFlight, { [ATTR.operation]: 'POST /c' })).toBe(0);
  }, 30_000);
});

describe('otelrev held: bounded memory', () => {
  it('a Redis stopped mid-execution: every execute span ends, in_flight back to 0', async () => {
    const redis = await startPrivateRedis();
    const client = new Redis({
      host: '127.0.0.1',
      port: redis.port,
      ...recommendedRedisOptions({ commandTimeoutMs: 150 }),
    });
    client.on('error', () => {});
    try {
      if (client.status !== 'ready') await once(client, 'ready');
      const t = setup();
      const counted = countingOpen(t.tracer, SPAN.execute);
      const spans = createOtelListener({ tracer: counted.tracer, metrics: false });
      let ends = 0;
      const idem = createIdempotency({
        store: createRedisStore({ client, keyPrefix: PREFIX }),
        leaseMs: 600,
        heartbeatMs: 150,
        storeTimeoutMs: 200,
        maxHoldMs: 2_000,
        onEvent: (event) => {
          if (event.type === 'execution_end') ends++;
          spans(event);
          t.listener(event);
        },
      });
      const begun = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          idem.begin({ key: `outage-${i}`, operation: 'POST /o' }),
        ),
      );
      expect(counted.open()).toBe(20);
      await redis.stop();
      // Half complete, a quarter release, a quarter are dropped: all fail or are abandoned.
      await Promise.allSettled(
        begun.map((b, i) => {
          if (b.kind !== 'acquired') throw new Error('acquired');
          if (i % 4 < 2) return b.execution.complete({ meta: {}, body: new Uint8Array([i]) });
          if (i % 4 === 2) return b.execution.release();
          return undefined;
        }),
      );
      await until(() => ends === 20 && counted.open() === 0, 8_000);
      expect(ends).toBe(20);
      expect(counted.open()).toBe(0);
      expect(await t.point(METRIC.inFlight, { [ATTR.operation]: 'POST /o' })).toBe(0);
      const results = new Set(t.spans(SPAN.execute).map((s) => s.attributes[ATTR.result]));
      expect([...results].every((r) => r === 'abandoned' || r === 'lease_lost')).toBe(true);
    } finally {
      client.disconnect();
      await redis.stop();
    }
  }, 20_000);

  it('begin() dropped without finishing, past maxOpenExecutions: all end, later ones still get spans', async () => {
    const t = setup({ maxOpenExecutions: 20 });
    const counted = countingOpen(t.tracer, SPAN.execute);
    const spans = createOtelListener({
      tracer: counted.tracer,
      metrics: false,
      maxOpenExecutions: 20,
    });
    let ends = 0;
    const idem = createIdempotency({
      store: createMemoryStore(),
      leaseMs: 150,
      heartbeatMs: false,
      onEvent: (event) => {
        if (event.type === 'execution_end') ends++;
        spans(event);
        t.listener(event);
      },
    });
    for (let i = 0; i < 200; i++) await idem.begin({ key: `dropped-${i}`, operation: 'POST /d' });
    expect(counted.open()).toBe(20);
    await until(() => ends === 200 && counted.open() === 0, 3_000);
    expect(ends).toBe(200);
    expect(counted.open()).toBe(0);
    expect(await t.point(METRIC.inFlight, { [ATTR.operation]: 'POST /d' })).toBe(0);
    const before = t.spans(SPAN.execute).length;
    await idem.execute({ key: 'after', operation: 'POST /d' }, async () => 1);
    expect(t.spans(SPAN.execute).length).toBe(before + 2); // both listeners' spans
  }, 10_000);
});

describe('otelrev held: an SDK that fails does not change the answers', () => {
  /** The answers and runs of a fixed sequence of requests (replays, conflicts, failures). */
  async function answers(onEvent: IdempotencyOptions['onEvent']) {
    const idem = createIdempotency<unknown>({ store: createMemoryStore(), onEvent });
    let runs = 0;
    const out: unknown[] = [];
    await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        try {
          out[i] = await idem.execute({ key: `k-${i % 8}`, operation: 'POST /f' }, async () => {
            runs++;
            await sleep(5);
            if (i % 8 === 7) throw new Error('the operation failed');
            return i % 8;
          });
        } catch (error) {
          out[i] = (error as { code?: string }).code ?? (error as Error).message;
        }
      }),
    );
    return { out, runs };
  }

  it('a throwing span processor and a meter whose instruments throw: same answers, same runs', async () => {
    const baseline = await answers(undefined);
    const throwing: SpanProcessor = {
      onStart() {
        throw new Error('onStart');
      },
      onEnd() {
        throw new Error('onEnd');
      },
      forceFlush: async () => {},
      shutdown: async () => {},
    };
    const tracer: Tracer = new BasicTracerProvider({ spanProcessors: [throwing] }).getTracer('x');
    const fail = () => {
      throw new Error('meter down');
    };
    const instrument = { add: fail, record: fail };
    const meter = {
      createCounter: () => instrument,
      createHistogram: () => instrument,
      createUpDownCounter: () => instrument,
    } as unknown as Meter;
    const broken = await answers(createOtelListener({ tracer, meter }));
    expect(broken).toEqual(baseline);
    expect(baseline.runs).toBeGreaterThan(0);
  });

  it('an exporter that throws and one that never answers: same answers, no unhandled error', async () => {
    const baseline = await answers(undefined);
    const throwing: SpanExporter = {
      export() {
        throw new Error('exporter down');
      },
      shutdown: async () => {},
    };
    const silent: SpanExporter = { export() {}, shutdown: async () => {} };
    const provider = new BasicTracerProvider({
      spanProcessors: [
        new SimpleSpanProcessor(throwing),
        new BatchSpanProcessor(silent, { scheduledDelayMillis: 1, exportTimeoutMillis: 50 }),
      ],
    });
    const started = performance.now();
    const slow = await answers(createOtelListener({ tracer: provider.getTracer('x') }));
    expect(slow).toEqual(baseline);
    expect(performance.now() - started).toBeLessThan(5_000);
    await sleep(100); // the batch's export times out meanwhile: nothing reaches the app
  });
});
