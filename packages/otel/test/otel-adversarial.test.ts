import { createIdempotency } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { metrics, trace } from '@opentelemetry/api';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { afterEach, describe, expect, it } from 'vitest';
import { createOtelListener, METRIC, SPAN } from '../src/index.js';
import { countingOpen, telemetry } from './support/telemetry.js';

// Adversarial review of @idem/otel (issue 17, point 1).

afterEach(() => {
  metrics.disable();
  trace.disable();
});

describe('@idem/otel under attack', () => {
  it('a listener created before the SDK registers its global providers still records spans and metrics', async () => {
    // Module order in real apps: the listener is created at import, the SDK starts later.
    const listener = createOtelListener();
    const spanExporter = new InMemorySpanExporter();
    const tracerProvider = new BasicTracerProvider({
      spanProcessors: [new SimpleSpanProcessor(spanExporter)],
    });
    const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
    const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
    const meterProvider = new MeterProvider({ readers: [reader] });
    trace.setGlobalTracerProvider(tracerProvider);
    metrics.setGlobalMeterProvider(meterProvider);
    try {
      const idem = createIdempotency({ store: createMemoryStore(), onEvent: listener });
      await idem.execute({ key: 'k', operation: 'POST /x' }, async () => 1);
      expect(spanExporter.getFinishedSpans().map((s) => s.name)).toContain(SPAN.acquire);
      await reader.forceFlush();
      const names = (exporter.getMetrics().at(-1)?.scopeMetrics ?? []).flatMap((scope) =>
        scope.metrics.map((m) => m.descriptor.name),
      );
      expect(names).toContain(METRIC.results);
    } finally {
      await tracerProvider.shutdown();
      await meterProvider.shutdown();
    }
  });

  it('two engines sharing one listener, same storage key and fence: no execute span is left open', async () => {
    const t = telemetry();
    // Count the execute spans started and ended through the tracer.
    const counted = countingOpen(t.tracer, SPAN.execute);
    const listener = createOtelListener({ tracer: counted.tracer, metrics: false });
    try {
      const [a, b] = [createMemoryStore(), createMemoryStore()].map((store) =>
        createIdempotency({ store, onEvent: listener, heartbeatMs: false }),
      );
      const request = { key: 'same', scope: ['tenant'], operation: 'POST /x' };
      const first = await a?.begin(request);
      const second = await b?.begin(request);
      for (const begun of [first, second])
        if (begun?.kind === 'acquired')
          await begun.execution.complete({ meta: {}, body: new Uint8Array() });
      expect(counted.open()).toBe(0);
      expect(t.spans(SPAN.execute).length).toBeGreaterThan(0);
    } finally {
      await t.shutdown();
    }
  });
});
