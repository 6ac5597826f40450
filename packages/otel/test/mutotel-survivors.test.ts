// Mutation audit of @idem/otel (mutotel): each test here fails with a mutant of src that the
// rest of the suite let live, and passes on the source. The listener is fed the engine's
// events directly (their shapes as @idem/core emits them), into the OpenTelemetry SDK with
// in-memory exporters.
import type { IdemEvent } from '@idem/core';
import { metrics, SpanStatusCode, type Tracer } from '@opentelemetry/api';
import {
  AggregationTemporality,
  type HistogramMetricData,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, createOtelListener, METRIC, OTHER_OPERATION, SPAN } from '../src/index.js';
import { missEvent } from './support/events.js';
import { countingOpen, telemetry } from './support/telemetry.js';

const SK = 'a'.repeat(64);
const OP = 'POST /charges';

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

function setup(options: Parameters<typeof telemetry>[0] = {}) {
  current = telemetry(options);
  return current;
}

const miss = (fence = 1, storageKey = SK, operation: string | undefined = OP): IdemEvent =>
  missEvent(storageKey, fence, operation);
const end = (
  result: 'completed' | 'released' | 'lease_lost' | 'abandoned',
  fence = 1,
  durationMs = 1,
  storageKey = SK,
): IdemEvent => ({ type: 'execution_end', storageKey, operation: OP, fence, result, durationMs });

describe('mutotel: operation labels', () => {
  it('keeps an operation of exactly 256 code units as its label; 257 is _other', async () => {
    const t = setup();
    const at = `/${'x'.repeat(255)}`;
    const past = `/${'y'.repeat(256)}`;
    t.listener({ type: 'mismatch', storageKey: SK, operation: at, durationMs: 1 });
    t.listener({ type: 'mismatch', storageKey: SK, operation: past, durationMs: 1 });
    expect(await t.point(METRIC.results, { [ATTR.operation]: at })).toBe(1);
    expect(await t.point(METRIC.results, { [ATTR.operation]: past })).toBeUndefined();
    expect(await t.point(METRIC.results, { [ATTR.operation]: OTHER_OPERATION })).toBe(1);
  });

  it('puts an operation that is not a string (from JavaScript) under _other', async () => {
    const t = setup();
    t.listener({
      type: 'mismatch',
      storageKey: SK,
      operation: 42 as unknown as string,
      durationMs: 1,
    });
    const points = (await t.metrics()).get(METRIC.results) ?? [];
    expect(points.map((p) => p.attributes[ATTR.operation])).toEqual([OTHER_OPERATION]);
  });

  it('keeps the whole storage key on spans of an event with no operation', () => {
    const t = setup();
    t.listener({ type: 'mismatch', storageKey: SK, operation: undefined, durationMs: 1 });
    const [acquire] = t.spans(SPAN.acquire);
    expect(acquire?.attributes[ATTR.storageKey]).toBe(SK);
  });
});

describe('mutotel: execute spans', () => {
  it('ends the first span of a shared (key, fence) pair with idem.execution_shared and keeps the pair until both ended', () => {
    const t = setup();
    t.listener(miss());
    t.listener(miss());
    const [first] = t.spans(SPAN.execute);
    expect(first?.events.map((e) => e.name)).toEqual(['idem.execution_shared']);
    // One of the two ends; a third acquisition of the same pair meanwhile still cannot be
    // told apart: no span of its own.
    t.listener(end('completed'));
    t.listener(miss());
    t.listener(end('completed'));
    t.listener(end('completed'));
    expect(t.spans(SPAN.execute)).toHaveLength(1);
    // Both ended: the pair is forgotten, the next acquisition of it has its span.
    t.listener(miss());
    t.listener(end('completed'));
    expect(t.spans(SPAN.execute)).toHaveLength(2);
  });

  it('keeps nothing for a tracer that gave no span: the slot stays free under maxOpenExecutions', () => {
    const t = setup();
    let executeSpans = 0;
    // A wrapper that forgot to return the span of the first execute span it was asked for.
    const tracer: Tracer = {
      startSpan(name, options, ctx) {
        const span = t.tracer.startSpan(name, options, ctx);
        if (name === SPAN.execute && executeSpans++ === 0) {
          span.end();
          return undefined as unknown as ReturnType<Tracer['startSpan']>;
        }
        return span;
      },
      startActiveSpan: t.tracer.startActiveSpan.bind(t.tracer) as Tracer['startActiveSpan'],
    };
    const listener = createOtelListener({ tracer, metrics: false, maxOpenExecutions: 1 });
    listener(miss(1, 'b'.repeat(64)));
    expect(t.spans(SPAN.execute)).toHaveLength(1); // the one the wrapper ended and dropped
    // The first acquisition is still held; the second gets the one slot, so its span.
    listener(miss(2, 'c'.repeat(64)));
    listener(end('completed', 2, 1, 'c'.repeat(64)));
    const spans = t.spans(SPAN.execute);
    expect(spans).toHaveLength(2);
    expect(spans[1]?.attributes[ATTR.result]).toBe('completed');
  });

  it('keeps at most 10,000 execute spans open by default', () => {
    const t = setup();
    const open = countingOpen(t.tracer, SPAN.execute);
    const listener = createOtelListener({ tracer: open.tracer, metrics: false });
    for (let i = 0; i < 10_001; i++) listener(miss(i + 1));
    expect(open.open()).toBe(10_000);
    for (let i = 0; i < 10_001; i++) listener(end('completed', i + 1));
    expect(open.open()).toBe(0);
  });

  it('notes store errors of other methods, releases, unrecorded outcomes and abandoned completions on the execute span', () => {
    const t = setup();
    t.listener(miss());
    t.listener({
      type: 'store_error',
      storageKey: SK,
      operation: OP,
      method: 'extend',
      fence: 1,
      error: new Error('down'),
      durationMs: 2,
    });
    t.listener({
      type: 'outcome_not_recorded',
      storageKey: SK,
      operation: OP,
      fence: 1,
      reason: 'too_large' as never,
    });
    t.listener({
      type: 'completion_abandoned',
      storageKey: SK,
      operation: OP,
      fence: 1,
      reason: 'error',
      error: new Error('x'),
      durationMs: 1,
    });
    t.listener({ type: 'released', storageKey: SK, operation: OP, fence: 1, durationMs: 1 });
    t.listener(end('released'));
    const [execute] = t.spans(SPAN.execute);
    expect(execute?.events.map((e) => e.name)).toEqual([
      'idem.store_error',
      'idem.outcome_not_recorded',
      'idem.completion_abandoned',
      'idem.released',
    ]);
    expect(execute?.events[0]?.attributes).toEqual({ [ATTR.storeMethod]: 'extend' });
  });

  it('marks an abandoned execution and a lost lease as errors, a completed or released one not', () => {
    const t = setup();
    const results = ['abandoned', 'lease_lost', 'completed', 'released'] as const;
    results.forEach((result, i) => {
      t.listener(miss(i + 1));
      t.listener(end(result, i + 1));
    });
    const byResult = new Map(
      t.spans(SPAN.execute).map((s) => [s.attributes[ATTR.result], s.status]),
    );
    expect(byResult.get('abandoned')).toEqual({
      code: SpanStatusCode.ERROR,
      message: 'abandoned',
    });
    expect(byResult.get('lease_lost')?.code).toBe(SpanStatusCode.ERROR);
    expect(byResult.get('completed')?.code).toBe(SpanStatusCode.UNSET);
    expect(byResult.get('released')?.code).toBe(SpanStatusCode.UNSET);
  });
});

describe('mutotel: span times and errors', () => {
  it('gives a span of an infinite, negative or NaN duration no length, and finite times', () => {
    const t = setup();
    for (const durationMs of [Number.POSITIVE_INFINITY, -5, Number.NaN])
      t.listener({ type: 'mismatch', storageKey: SK, operation: OP, durationMs });
    const spans = t.spans(SPAN.acquire);
    expect(spans).toHaveLength(3);
    for (const span of spans) {
      const start = span.startTime[0] * 1e9 + span.startTime[1];
      const ended = span.endTime[0] * 1e9 + span.endTime[1];
      expect(Number.isFinite(start)).toBe(true);
      expect(ended - start).toBe(0);
    }
  });

  it("puts the error's message on a failed span's status", () => {
    const t = setup();
    t.listener({
      type: 'store_error',
      storageKey: SK,
      operation: OP,
      method: 'acquire',
      fence: undefined,
      error: new Error('connection refused 10.0.0.9'),
      durationMs: 3,
    });
    t.listener({
      type: 'outcome_corrupt',
      storageKey: SK,
      operation: OP,
      fence: 1,
      error: 'not an Error',
      durationMs: 1,
      decodeMs: 1,
    });
    expect(t.spans(SPAN.acquire)[0]?.status).toEqual({
      code: SpanStatusCode.ERROR,
      message: 'connection refused 10.0.0.9',
    });
    expect(t.spans(SPAN.replay)[0]?.status).toEqual({
      code: SpanStatusCode.ERROR,
      message: 'not an Error',
    });
  });
});

describe('mutotel: durations in seconds, store buckets', () => {
  it('records store calls and executions in seconds, store calls in the advised buckets', async () => {
    const t = setup();
    t.listener({
      type: 'store_call',
      storageKey: SK,
      operation: OP,
      method: 'get',
      ok: true,
      durationMs: 250,
    });
    t.listener(miss());
    t.listener(end('completed', 1, 1_500));
    const all = await t.metrics();
    const store = all.get(METRIC.storeDuration) as HistogramMetricData['dataPoints'];
    expect(store[0]?.value.sum).toBeCloseTo(0.25, 9);
    expect(store[0]?.value.buckets.boundaries).toEqual([
      0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]);
    const execution = all.get(METRIC.executionDuration) as HistogramMetricData['dataPoints'];
    expect(execution[0]?.value.sum).toBeCloseTo(1.5, 9);
  });
});

describe('mutotel: options', () => {
  it('metrics: false records nothing on the global meter provider', async () => {
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    const provider = new MeterProvider({ readers: [reader] });
    metrics.setGlobalMeterProvider(provider);
    try {
      const listener = createOtelListener({ metrics: false, spans: false });
      listener({ type: 'mismatch', storageKey: SK, operation: OP, durationMs: 1 });
      listener(miss());
      listener(end('completed'));
      await reader.forceFlush();
      const names = exporter
        .getMetrics()
        .flatMap((r) => r.scopeMetrics.flatMap((s) => s.metrics))
        .map((m) => m.descriptor.name);
      expect(names).toEqual([]);
    } finally {
      metrics.disable();
      await provider.shutdown();
    }
  });

  it('names at most 40 characters of a refused string option, never the whole value', () => {
    const value = `secret-${'z'.repeat(500)}`;
    let message = '';
    try {
      createOtelListener({ spans: value as unknown as boolean });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain('spans must be true or false');
    expect(message).toContain(JSON.stringify(value.slice(0, 40)));
    expect(message.length).toBeLessThan(100);
  });
});
