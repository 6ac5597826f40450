import {
  createIdempotency,
  createOutcomeCodec,
  deriveStorageKey,
  type IdempotencyOptions,
  ManualClock,
} from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { SpanStatusCode } from '@opentelemetry/api';
import type { HistogramMetricData } from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, METRIC, SPAN } from '../src/index.js';
import { telemetry } from './support/telemetry.js';

const KEY = 'client-key-5b1c9e';
const SCOPE = ['tenant-1', 'POST /charges'];
const OPERATION = 'POST /charges';
const STORAGE_KEY = deriveStorageKey(SCOPE, KEY);
const request = (fingerprint = 'f1') => ({
  key: KEY,
  scope: SCOPE,
  fingerprint,
  operation: OPERATION,
});

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

function setup(options: Partial<IdempotencyOptions> = {}, otel = telemetry()) {
  current = otel;
  const clock = new ManualClock();
  const store = options.store ?? createMemoryStore({ clock });
  const idem = createIdempotency<unknown>({
    store,
    clock,
    heartbeatMs: false,
    onEvent: otel.listener,
    ...options,
  });
  return { ...otel, idem, clock, store };
}

describe('@idem/otel on the engine and the memory store', () => {
  it('miss: acquire, execute and complete spans under the caller, results, latency, in-flight, size', async () => {
    const t = setup();
    await t.tracer.startActiveSpan('request', async (parent) => {
      await t.idem.execute(request(), async () => ({ charged: 42 }));
      parent.end();
    });
    const [root] = t.spans('request');
    const [acquire] = t.spans(SPAN.acquire);
    const [execute] = t.spans(SPAN.execute);
    const [complete] = t.spans(SPAN.complete);
    expect(acquire?.attributes).toMatchObject({
      [ATTR.result]: 'miss',
      [ATTR.storageKey]: STORAGE_KEY,
      [ATTR.operation]: OPERATION,
      [ATTR.fence]: 1,
      [ATTR.takeover]: false,
    });
    expect(execute?.attributes).toMatchObject({ [ATTR.result]: 'completed', [ATTR.fence]: 1 });
    expect(complete?.attributes[ATTR.outcomeBytes]).toBeGreaterThan(0);
    // Parents: the caller's span holds acquire and execute; execute holds complete.
    const rootId = root?.spanContext().spanId;
    expect(acquire?.parentSpanContext?.spanId).toBe(rootId);
    expect(execute?.parentSpanContext?.spanId).toBe(rootId);
    expect(complete?.parentSpanContext?.spanId).toBe(execute?.spanContext().spanId);
    expect(new Set(t.spans().map((s) => s.spanContext().traceId)).size).toBe(1);
    // The raw key appears in no span.
    expect(JSON.stringify(t.spans().map((s) => s.attributes))).not.toContain(KEY);

    expect(
      await t.point(METRIC.results, { [ATTR.result]: 'miss', [ATTR.operation]: OPERATION }),
    ).toBe(1);
    expect(await t.point(METRIC.inFlight, { [ATTR.operation]: OPERATION })).toBe(0);
    const metrics = await t.metrics();
    const latency = metrics.get(METRIC.storeDuration) as HistogramMetricData['dataPoints'];
    const methods = latency.map((p) => [
      p.attributes[ATTR.storeMethod],
      p.attributes[ATTR.storeOutcome],
      p.value.count,
    ]);
    expect(methods).toEqual(
      expect.arrayContaining([
        ['acquire', 'ok', 1],
        ['complete', 'ok', 1],
      ]),
    );
    const size = metrics.get(METRIC.outcomeSize) as HistogramMetricData['dataPoints'];
    expect(size[0]?.value.sum).toBe(complete?.attributes[ATTR.outcomeBytes]);
  });

  it('hit: an acquire span and a replay span with the stored size', async () => {
    const t = setup();
    await t.idem.execute(request(), async () => 'first');
    await t.idem.execute(request(), async () => 'second');
    const acquires = t.spans(SPAN.acquire).map((s) => s.attributes[ATTR.result]);
    expect(acquires).toEqual(['miss', 'hit']);
    const [replay] = t.spans(SPAN.replay);
    expect(replay?.attributes).toMatchObject({ [ATTR.result]: 'hit', [ATTR.fence]: 1 });
    expect(replay?.attributes[ATTR.outcomeBytes]).toBe(
      t.spans(SPAN.complete)[0]?.attributes[ATTR.outcomeBytes],
    );
    expect(await t.point(METRIC.results, { [ATTR.result]: 'hit' })).toBe(1);
  });

  it('conflict and mismatch: acquire spans and counters', async () => {
    const t = setup();
    const begun = await t.idem.begin(request());
    await expect(t.idem.begin(request())).rejects.toMatchObject({ code: 'IN_PROGRESS' });
    await expect(t.idem.begin(request('other'))).rejects.toMatchObject({ code: 'MISMATCH' });
    const results = t.spans(SPAN.acquire).map((s) => s.attributes[ATTR.result]);
    expect(results).toEqual(['miss', 'conflict', 'mismatch']);
    expect(t.spans(SPAN.acquire)[1]?.attributes[ATTR.retryAfterMs]).toBeGreaterThan(0);
    expect(await t.point(METRIC.results, { [ATTR.result]: 'conflict' })).toBe(1);
    expect(await t.point(METRIC.results, { [ATTR.result]: 'mismatch' })).toBe(1);
    // The execution is still held: in flight, its span still open.
    expect(await t.point(METRIC.inFlight, {})).toBe(1);
    expect(t.spans(SPAN.execute)).toHaveLength(0);
    if (begun.kind === 'acquired') await begun.execution.release();
    expect(await t.point(METRIC.inFlight, {})).toBe(0);
    expect(t.spans(SPAN.execute)[0]?.attributes[ATTR.result]).toBe('released');
  });

  it('takeover and lease_lost: the stale execute span ends in error, the counter counts it', async () => {
    const t = setup({ leaseMs: 30_000 });
    const first = await t.idem.begin(request());
    t.clock.advance(30_001);
    const second = await t.idem.begin(request());
    if (first.kind !== 'acquired' || second.kind !== 'acquired')
      throw new Error('expected acquisitions');
    expect(t.spans(SPAN.acquire)[1]?.attributes).toMatchObject({
      [ATTR.takeover]: true,
      [ATTR.fence]: 2,
    });
    expect(await t.point(METRIC.results, { [ATTR.result]: 'miss', [ATTR.takeover]: true })).toBe(1);
    await expect(
      first.execution.complete({ meta: {}, body: new Uint8Array() }),
    ).rejects.toMatchObject({
      code: 'LEASE_LOST',
    });
    const [stale] = t.spans(SPAN.execute);
    expect(stale?.attributes).toMatchObject({ [ATTR.result]: 'lease_lost', [ATTR.fence]: 1 });
    expect(stale?.status.code).toBe(SpanStatusCode.ERROR);
    expect(stale?.events.map((e) => e.name)).toContain('idem.lease_lost');
    expect(await t.point(METRIC.results, { [ATTR.result]: 'lease_lost' })).toBe(1);
    expect(await t.point(METRIC.inFlight, {})).toBe(1);
    await second.execution.complete({ meta: {}, body: new Uint8Array([1]) });
    expect(await t.point(METRIC.inFlight, {})).toBe(0);
  });

  it('outcome_corrupt: an outcome sealed with a key the reader lacks is an error span, never a replay', async () => {
    const store = createMemoryStore();
    const writer = createIdempotency<unknown>({
      store,
      outcomeCodec: createOutcomeCodec({ keys: [{ id: 'old', key: new Uint8Array(32).fill(1) }] }),
    });
    await writer.execute(request(), async () => 'sealed');
    const t = setup({
      store,
      outcomeCodec: createOutcomeCodec({ keys: [{ id: 'new', key: new Uint8Array(32).fill(2) }] }),
    });
    await expect(t.idem.execute(request(), async () => 'again')).rejects.toMatchObject({
      code: 'OUTCOME_CORRUPT',
    });
    const [replay] = t.spans(SPAN.replay);
    expect(replay?.status.code).toBe(SpanStatusCode.ERROR);
    expect(replay?.events.map((e) => e.name)).toContain('exception');
    expect(await t.point(METRIC.results, { [ATTR.result]: 'outcome_corrupt' })).toBe(1);
  });

  it('maxOpenExecutions bounds the open execute spans; metrics still count every acquisition', async () => {
    const t = setup({}, telemetry({ maxOpenExecutions: 1 }));
    const a = await t.idem.begin({ ...request(), key: 'a' });
    const b = await t.idem.begin({ ...request(), key: 'b' });
    expect(await t.point(METRIC.inFlight, {})).toBe(2);
    for (const begun of [a, b])
      if (begun.kind === 'acquired')
        await begun.execution.complete({ meta: {}, body: new Uint8Array() });
    expect(t.spans(SPAN.execute)).toHaveLength(1);
    expect(await t.point(METRIC.inFlight, {})).toBe(0);
  });

  it('spans: false and metrics: false switch each side off', async () => {
    const t = setup({}, telemetry({ spans: false }));
    await t.idem.execute(request(), async () => 1);
    expect(t.spans()).toHaveLength(0);
    expect(await t.point(METRIC.results, { [ATTR.result]: 'miss' })).toBe(1);
    await t.shutdown();
    const u = setup({}, telemetry({ metrics: false }));
    await u.idem.execute(request(), async () => 1);
    expect(u.spans(SPAN.acquire)).toHaveLength(1);
    expect((await u.metrics()).size).toBe(0);
  });
});
