import { context, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import {
  AggregationTemporality,
  type DataPoint,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { createOtelListener, type OtelListenerOptions } from '../../src/index.js';

// Spans started inside `tracer.startActiveSpan` find their parent through async context.
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());

/**
 * The OpenTelemetry SDK with in-memory exporters, and the listener under test wired to it.
 */
export function telemetry(options: OtelListenerOptions = {}) {
  const spanExporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({
    spanProcessors: [new SimpleSpanProcessor(spanExporter)],
  });
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({
    exporter: metricExporter,
    exportIntervalMillis: 3_600_000,
  });
  const meterProvider = new MeterProvider({ readers: [reader] });
  const tracer = tracerProvider.getTracer('test');
  const listener = createOtelListener({
    tracer,
    meter: meterProvider.getMeter('test'),
    ...options,
  });

  /** Finished spans named `name` (all when omitted). */
  const spans = (name?: string): ReadableSpan[] =>
    spanExporter.getFinishedSpans().filter((span) => name === undefined || span.name === name);

  /** The data points of each metric, as exported now. */
  async function metrics(): Promise<Map<string, DataPoint<unknown>[]>> {
    await reader.forceFlush();
    const exported = metricExporter.getMetrics().at(-1);
    const byName = new Map<string, DataPoint<unknown>[]>();
    for (const scope of exported?.scopeMetrics ?? [])
      for (const metric of scope.metrics)
        byName.set(metric.descriptor.name, metric.dataPoints as DataPoint<unknown>[]);
    return byName;
  }

  /** The value of the data point of `name` whose attributes include `match`. */
  async function point(name: string, match: Record<string, unknown>): Promise<unknown> {
    const points = (await metrics()).get(name) ?? [];
    const found = points.find((p) =>
      Object.entries(match).every(([key, value]) => p.attributes[key] === value),
    );
    return found?.value;
  }

  return {
    listener,
    tracer,
    spans,
    metrics,
    point,
    shutdown: async () => {
      await tracerProvider.shutdown();
      await meterProvider.shutdown();
    },
  };
}

/**
 * `tracer`, counting the spans named `name` it started and that were not ended yet (the
 * listener's open `idem.execute` spans, seen from outside).
 */
export function countingOpen(tracer: Tracer, name: string): { tracer: Tracer; open(): number } {
  let open = 0;
  return {
    tracer: {
      startSpan(spanName, options, ctx) {
        const span = tracer.startSpan(spanName, options, ctx);
        if (spanName !== name) return span;
        open++;
        const end = span.end.bind(span);
        span.end = (time) => {
          open--;
          end(time);
        };
        return span;
      },
      startActiveSpan: tracer.startActiveSpan.bind(tracer) as Tracer['startActiveSpan'],
    },
    open: () => open,
  };
}
