import { createIdempotency, type IdemEvent } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { context, metrics, type Span, type Tracer, trace } from '@opentelemetry/api';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider } from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it } from 'vitest';
import { ATTR, createOtelListener, METRIC, SPAN } from '../src/index.js';
import { countingOpen, telemetry } from './support/telemetry.js';

// otelrev (second pass): the listener's options, its map of open execute spans, and
// `idem.leases.in_flight`, attacked with the real SDK and the real engine on the memory store.

let current: ReturnType<typeof telemetry> | undefined;
afterEach(async () => {
  await current?.shutdown();
  current = undefined;
});

function setup(options: Parameters<typeof telemetry>[0] = {}) {
  const t = telemetry(options);
  current = t;
  return t;
}

const body = { meta: {}, body: new Uint8Array([1]) };

describe('otelrev: options are checked at creation', () => {
  // FIXED (was FINDING MEDIUM): `createOtelListener` read its options without a check: a
  // misspelt name was ignored (`{ span: false }`, meant to keep request data off the
  // tracing backend, left every span on; `maxOpenExecution: 0` kept the 10,000 default),
  // `spans: 'false'` (a value read from an environment variable) switched spans ON, a
  // `tracer` that is not one (`{}`, a `TracerProvider`) recorded nothing without a word, and
  // a `meter` that is not one (a `MeterProvider`, `null`) failed with a bare TypeError
  // (`meter.createCounter is not a function`); `null` options threw a TypeError too. The
  // other packages refuse such options with a typed error. Fix: each is refused with a
  // RangeError naming the option (the type the listener already threw for its counts).
  const refused: [string, unknown][] = [
    ['span: false', { span: false }],
    ['maxOpenExecution', { maxOpenExecution: 0 }],
    ['Metrics', { Metrics: false }],
    ['spans: "false"', { spans: 'false' }],
    ['metrics: 0', { metrics: 0 }],
    ['tracer: {}', { tracer: {} }],
    ['tracer: null', { tracer: null }],
    ['tracer: a TracerProvider', { tracer: new BasicTracerProvider() }],
    ['meter: {}', { meter: {} }],
    ['meter: null', { meter: null }],
    ['meter: a MeterProvider', { meter: new MeterProvider() }],
    ['options: null', null],
    ['options: a string', 'spans'],
    ['options: an array', []],
  ];
  for (const [name, options] of refused)
    it(`refuses ${name} with a RangeError`, () => {
      expect(() => createOtelListener(options as never)).toThrow(RangeError);
    });

  it('names the option, and the near one of a misspelt name', () => {
    expect(() => createOtelListener({ span: false } as never)).toThrow(
      /span is not an option of @idem\/otel \(did you mean spans\?\)/,
    );
    expect(() => createOtelListener({ meter: new MeterProvider() } as never)).toThrow(
      /meter must be an OpenTelemetry Meter.*got a MeterProvider/,
    );
  });

  it('takes real SDK objects, booleans, and names set to undefined', () => {
    const tracer = new BasicTracerProvider().getTracer('t');
    const meter = new MeterProvider().getMeter('m');
    for (const options of [
      undefined,
      {},
      { tracer, meter, spans: false, metrics: true },
      { tracer: undefined, meter: undefined, spans: undefined, maxOperations: undefined },
      { ...{ tracer }, extra: undefined } as never,
    ])
      expect(() => createOtelListener(options)).not.toThrow();
  });
});

describe('otelrev: the open execute spans', () => {
  // FIXED (was FINDING LOW): an execute span was kept under its storage key and fence as
  // the tracer returned it, and removed at `execution_end` only when it was truthy: a tracer
  // wrapper that returned nothing (a `startSpan` that forgot its `return`) left an entry that
  // never left, so after `maxOpenExecutions` (10,000) acquisitions no acquisition got an
  // execute span again, for the life of the process, even once the wrapper was fixed
  // (a hot reload, a sampler switched). Fix: only a span (an object) is kept.
  it('a tracer that returned no span does not use up maxOpenExecutions for good', async () => {
    const t = setup({ maxOpenExecutions: 3 });
    let broken = true;
    const wrapper = {
      startSpan(name, options, ctx) {
        const span = t.tracer.startSpan(name, options, ctx);
        if (broken && name === SPAN.execute) {
          span.end();
          return undefined as unknown as Span;
        }
        return span;
      },
      startActiveSpan: t.tracer.startActiveSpan.bind(t.tracer),
    } as Tracer;
    const listener = createOtelListener({ tracer: wrapper, metrics: false, maxOpenExecutions: 3 });
    const idem = createIdempotency({
      store: createMemoryStore(),
      heartbeatMs: false,
      onEvent: listener,
    });
    for (let i = 0; i < 5; i++) await idem.execute({ key: `broken-${i}` }, async () => i);
    broken = false;
    await idem.execute({ key: 'fixed' }, async () => 'ok');
    const fixed = t.spans(SPAN.execute).filter((s) => s.attributes[ATTR.result] === 'completed');
    expect(fixed).toHaveLength(1);
  });

  // FIXED (was FINDING LOW): at `execution_end` the result and status were set and the span
  // ended in one guarded block: a span whose `setAttribute` threw (a wrapper, an SDK
  // refusing attributes after a limit) was never ended, so it was never exported.
  it('an execute span whose setAttribute throws is still ended', async () => {
    const t = setup();
    const counted = countingOpen(t.tracer, SPAN.execute);
    const wrapper = {
      startSpan(name, options, ctx) {
        const span = counted.tracer.startSpan(name, options, ctx);
        if (name === SPAN.execute)
          span.setAttribute = () => {
            throw new Error('attribute limit');
          };
        return span;
      },
      startActiveSpan: t.tracer.startActiveSpan.bind(t.tracer),
    } as Tracer;
    const idem = createIdempotency({
      store: createMemoryStore(),
      heartbeatMs: false,
      onEvent: createOtelListener({ tracer: wrapper, metrics: false }),
    });
    await idem.execute({ key: 'k' }, async () => 1);
    expect(counted.open()).toBe(0);
    expect(t.spans(SPAN.execute)).toHaveLength(1);
  });

  // FIXED (was FINDING MEDIUM): open execute spans are found by storage key and fence, and
  // two acquisitions with the same pair at once (two engines on different stores sharing one
  // listener: a store per tenant, each with the same scope naming and its own fences from 1)
  // "shared the first one's span": the second's release, lost lease or abandonment was put
  // on the first's span, in the first REQUEST's TRACE (another tenant's), and that span
  // ended with the second's result (`released`, or an error status for `lease_lost`) while
  // its own execution completed; the second's `idem.complete` span was a child of it too.
  // Fix: a count of holders per pair; when a second acquisition of an open pair begins, the
  // first's span ends there (`idem.execution_shared`, no result) and neither's later events
  // are put on an execute span; the pair is forgotten when both ended.
  it("two stores, same storage key and fence: neither request's events land in the other's trace", async () => {
    const t = setup();
    const counted = countingOpen(t.tracer, SPAN.execute);
    const listener = createOtelListener({ tracer: counted.tracer, metrics: false });
    const [a, b] = [createMemoryStore(), createMemoryStore()].map((store) =>
      createIdempotency({ store, onEvent: listener, heartbeatMs: false }),
    );
    if (!a || !b) throw new Error('two engines');
    const rootA = t.tracer.startSpan('tenant A: POST /pay');
    const rootB = t.tracer.startSpan('tenant B: POST /pay');
    const inA = <R>(fn: () => R) => context.with(trace.setSpan(context.active(), rootA), fn);
    const inB = <R>(fn: () => R) => context.with(trace.setSpan(context.active(), rootB), fn);
    const request = { key: 'order-1', scope: ['POST /pay'], operation: 'POST /pay' };
    const first = await inA(() => a.begin(request));
    const second = await inB(() => b.begin(request));
    if (first.kind !== 'acquired' || second.kind !== 'acquired') throw new Error('acquired');
    expect(second.execution.fence).toBe(first.execution.fence);
    await inB(() => second.execution.release());
    await inA(() => first.execution.complete(body));
    rootA.end();
    rootB.end();
    const traceA = rootA.spanContext().traceId;
    const traceB = rootB.spanContext().traceId;
    const inTrace = (id: string) => t.spans().filter((s) => s.spanContext().traceId === id);
    // A completed: nothing in its trace says released.
    const releasedInA = inTrace(traceA).filter(
      (s) =>
        s.attributes[ATTR.result] === 'released' ||
        s.events.some((e) => e.name === 'idem.released'),
    );
    expect(releasedInA.map((s) => s.name)).toEqual([]);
    // B released: nothing in its trace says completed.
    const completedInB = inTrace(traceB).filter((s) => s.attributes[ATTR.result] === 'completed');
    expect(completedInB.map((s) => s.name)).toEqual([]);
    // A's completion is in A's trace.
    expect(inTrace(traceA).filter((s) => s.name === SPAN.complete)).toHaveLength(1);
    expect(counted.open()).toBe(0);
    // The pair is forgotten: a later acquisition of it gets a span with its own result.
    const third = await a.begin({ ...request, key: 'order-2' });
    if (third.kind !== 'acquired') throw new Error('acquired');
    await third.execution.release();
    expect(t.spans(SPAN.execute).at(-1)?.attributes[ATTR.result]).toBe('released');
    expect(counted.open()).toBe(0);
  });
});

/** An engine whose listener uses the global meter provider, and an SDK provider to make global. */
function globalMetricsSetup() {
  const listener = createOtelListener({ spans: false });
  const idem = createIdempotency({
    store: createMemoryStore(),
    heartbeatMs: false,
    onEvent: listener,
  });
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const provider = new MeterProvider({ readers: [reader] });
  /** The metric `name` as the provider last exported it (flushed first). */
  const metric = async (name: string) => {
    await reader.forceFlush();
    return exporter
      .getMetrics()
      .at(-1)
      ?.scopeMetrics.flatMap((scope) => scope.metrics)
      .find((m) => m.descriptor.name === name);
  };
  return { idem, provider, metric };
}

describe('otelrev: idem.leases.in_flight', () => {
  // FIXED (was FINDING LOW): without a `meter` option the listener makes its instruments
  // again when the global provider changes (so that one created before the SDK records at
  // all), but the acquisitions held at that moment had counted +1 on the old provider (the
  // no-op one) and counted -1 on the new one at their end: `idem.leases.in_flight` stayed
  // below zero for good by the number of leases held when the SDK started (an app that
  // starts its SDK after it serves, a Lambda that awaits its config first). Fix: the
  // listener counts the acquisitions it holds per label, and the instruments of a provider
  // that becomes the global one are brought to it (once a provider: the same provider
  // registered again after `metrics.disable()` is not told twice).
  it('acquisitions held when the global SDK starts end without taking it below zero', async () => {
    const { idem, provider, metric } = globalMetricsSetup();
    const inFlight = async () =>
      (await metric(METRIC.inFlight))?.dataPoints.find(
        (p) => p.attributes[ATTR.operation] === 'POST /x',
      )?.value;
    try {
      const before = await idem.begin({ key: 'before', operation: 'POST /x' });
      metrics.setGlobalMeterProvider(provider);
      const after = await idem.begin({ key: 'after', operation: 'POST /x' });
      if (before.kind !== 'acquired' || after.kind !== 'acquired') throw new Error('acquired');
      expect(await inFlight()).toBe(2);
      // Off and on again (a test harness, an SDK restarted): one begins and one ends meanwhile.
      metrics.disable();
      const during = await idem.begin({ key: 'during', operation: 'POST /x' });
      if (during.kind !== 'acquired') throw new Error('acquired');
      await after.execution.complete(body);
      metrics.setGlobalMeterProvider(provider);
      await before.execution.complete(body);
      expect(await inFlight()).toBe(1);
      await during.execution.complete(body);
      expect(await inFlight()).toBe(0);
    } finally {
      metrics.disable();
      await provider.shutdown();
    }
  });

  // FIXED (was FINDING LOW): an `execution_end` whose `miss` the listener never saw (a
  // listener of the app's own, called first in `onEvent`, that threw on the miss) took
  // `idem.leases.in_flight` one below zero for good.
  it('an execution_end without its miss does not take it below zero', async () => {
    const t = setup({ spans: false });
    const orphan: IdemEvent = {
      type: 'execution_end',
      storageKey: 'a'.repeat(64),
      operation: 'POST /x',
      fence: 1,
      result: 'completed',
      durationMs: 1,
    };
    t.listener(orphan);
    const idem = createIdempotency({
      store: createMemoryStore(),
      heartbeatMs: false,
      onEvent: t.listener,
    });
    await idem.execute({ key: 'k', operation: 'POST /x' }, async () => 1);
    expect(await t.point(METRIC.inFlight, { [ATTR.operation]: 'POST /x' })).toBe(0);
  });
});

describe('otelrev: a global meter provider whose getMeter throws once', () => {
  // FIXED (was LOW, left open by otelrev): the listener took the new global provider as seen
  // before its getMeter answered, so a provider that threw once (an SDK still starting) was
  // never asked again: every metric of the process was lost for good.
  it('is asked again at the next event, and later events are counted', async () => {
    const { idem, provider, metric } = globalMetricsSetup();
    let asked = 0;
    const flaky = {
      getMeter: (...args: Parameters<MeterProvider['getMeter']>) => {
        asked++;
        if (asked === 1) throw new Error('SDK not ready');
        return provider.getMeter(...args);
      },
    };
    try {
      metrics.setGlobalMeterProvider(flaky);
      await idem.execute({ key: 'first', operation: 'POST /m' }, async () => 1);
      await idem.execute({ key: 'second', operation: 'POST /m' }, async () => 2);
      const results = await metric(METRIC.results);
      const misses = results?.dataPoints
        .filter((p) => p.attributes[ATTR.result] === 'miss')
        .reduce((sum, p) => sum + Number(p.value), 0);
      expect(asked).toBeGreaterThanOrEqual(2);
      // The first execution's miss came while getMeter threw; the second's is counted.
      expect(misses).toBeGreaterThanOrEqual(1);
    } finally {
      metrics.disable();
      await provider.shutdown();
    }
  });
});
