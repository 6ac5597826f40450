import type { ExecutionEndResult, IdemEvent, IdemEventListener } from '@idem/core';
import {
  type Attributes,
  context,
  type Meter,
  metrics,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { ATTR, METRIC, SPAN } from './attributes.js';

/** Options of {@link createOtelListener}. */
export interface OtelListenerOptions {
  /** Where spans go. @default trace.getTracer('@idem/otel') (the global provider) */
  tracer?: Tracer;
  /** Where metrics go. @default metrics.getMeter('@idem/otel') (the global provider) */
  meter?: Meter;
  /** Record spans. @default true */
  spans?: boolean;
  /** Record metrics. @default true */
  metrics?: boolean;
  /**
   * Most `idem.execute` spans kept open at once (one per acquisition this process holds);
   * past it an acquisition gets no execute span (its other spans and metrics still count).
   * @default 10_000
   */
  maxOpenExecutions?: number;
}

const SCOPE_NAME = '@idem/otel';
// Store calls take from well under a millisecond (memory) to seconds (a timeout).
const STORE_BUCKETS = [
  0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
const FAILED: ReadonlySet<ExecutionEndResult> = new Set(['lease_lost', 'abandoned']);

/** Wall-clock ms with sub-millisecond precision, for span times. */
const nowMs = (): number => performance.timeOrigin + performance.now();

/**
 * An `onEvent` listener for `createIdempotency` that turns the engine's events into
 * OpenTelemetry spans (`idem.acquire`, `idem.execute`, `idem.complete`, `idem.replay`) and
 * metrics (`idem.results`, `idem.store.duration`, `idem.leases.in_flight`,
 * `idem.outcome.size`, `idem.execution.duration`). Spans are children of the context active
 * when the engine was called (an HTTP server span, say); `idem.complete` is a child of its
 * `idem.execute`. No span or metric carries the client's raw key: `idem.storage_key` is its
 * hash within the scope.
 */
export function createOtelListener(options: OtelListenerOptions = {}): IdemEventListener {
  const tracer =
    options.spans === false ? undefined : (options.tracer ?? trace.getTracer(SCOPE_NAME));
  const meter =
    options.metrics === false ? undefined : (options.meter ?? metrics.getMeter(SCOPE_NAME));
  const maxOpen = options.maxOpenExecutions ?? 10_000;
  const results = meter?.createCounter(METRIC.results, {
    description: 'Results of idempotent requests and executions',
  });
  const storeDuration = meter?.createHistogram(METRIC.storeDuration, {
    description: 'Duration of store calls',
    unit: 's',
    advice: { explicitBucketBoundaries: STORE_BUCKETS },
  });
  const inFlight = meter?.createUpDownCounter(METRIC.inFlight, {
    description: 'Acquisitions (leases) this process holds',
  });
  const outcomeSize = meter?.createHistogram(METRIC.outcomeSize, {
    description: 'Size of recorded outcomes as stored',
    unit: 'By',
  });
  const executionDuration = meter?.createHistogram(METRIC.executionDuration, {
    description: 'How long acquisitions were held, from acquire to the end of the execution',
    unit: 's',
  });
  /** Open `idem.execute` spans by storage key and fence. */
  const executions = new Map<string, Span>();

  const base = (event: IdemEvent): Attributes =>
    event.operation === undefined
      ? { [ATTR.storageKey]: event.storageKey }
      : { [ATTR.storageKey]: event.storageKey, [ATTR.operation]: event.operation };
  const labels = (event: IdemEvent, extra: Attributes = {}): Attributes =>
    event.operation === undefined ? extra : { [ATTR.operation]: event.operation, ...extra };
  const count = (event: IdemEvent, result: string, extra: Attributes = {}) =>
    results?.add(1, labels(event, { [ATTR.result]: result, ...extra }));

  /** A span that ran for `durationMs` until now, under `parent` (default: the active context). */
  function finished(
    name: string,
    durationMs: number,
    attributes: Attributes,
    error?: unknown,
    parent?: Span,
  ): void {
    if (!tracer) return;
    const end = nowMs();
    const ctx = parent ? trace.setSpan(context.active(), parent) : context.active();
    const span = tracer.startSpan(
      name,
      { kind: SpanKind.INTERNAL, startTime: end - durationMs, attributes },
      ctx,
    );
    if (error !== undefined) fail(span, error);
    span.end(end);
  }

  const executionKey = (event: { storageKey: string; fence: number }) =>
    `${event.storageKey}#${event.fence}`;

  function openExecution(event: Extract<IdemEvent, { type: 'miss' }>, attributes: Attributes) {
    if (!tracer || executions.size >= maxOpen) return;
    const span = tracer.startSpan(
      SPAN.execute,
      { kind: SpanKind.INTERNAL, attributes },
      context.active(),
    );
    executions.set(executionKey(event), span);
  }

  return (event) => {
    switch (event.type) {
      case 'miss': {
        const attributes = {
          ...base(event),
          [ATTR.fence]: event.fence,
          [ATTR.takeover]: event.takeover,
        };
        finished(SPAN.acquire, event.durationMs, { ...attributes, [ATTR.result]: 'miss' });
        openExecution(event, attributes);
        count(event, 'miss', { [ATTR.takeover]: event.takeover });
        inFlight?.add(1, labels(event));
        return;
      }
      case 'hit': {
        const attributes = {
          ...base(event),
          [ATTR.fence]: event.fence,
          [ATTR.outcomeBytes]: event.outcomeBytes,
          [ATTR.result]: 'hit',
        };
        finished(SPAN.acquire, event.durationMs, attributes);
        finished(SPAN.replay, event.decodeMs, attributes);
        count(event, 'hit');
        return;
      }
      case 'conflict':
        finished(SPAN.acquire, event.durationMs, {
          ...base(event),
          [ATTR.fence]: event.fence,
          [ATTR.retryAfterMs]: event.retryAfterMs,
          [ATTR.result]: 'conflict',
        });
        count(event, 'conflict');
        return;
      case 'mismatch':
        finished(SPAN.acquire, event.durationMs, { ...base(event), [ATTR.result]: 'mismatch' });
        count(event, 'mismatch');
        return;
      case 'outcome_corrupt': {
        const attributes = {
          ...base(event),
          [ATTR.fence]: event.fence,
          [ATTR.result]: 'outcome_corrupt',
        };
        finished(SPAN.acquire, event.durationMs, attributes);
        finished(SPAN.replay, 0, attributes, event.error);
        count(event, 'outcome_corrupt');
        return;
      }
      case 'store_error': {
        const method = { [ATTR.storeMethod]: event.method };
        if (event.method === 'acquire')
          finished(
            SPAN.acquire,
            event.durationMs,
            { ...base(event), ...method, [ATTR.result]: 'store_error' },
            event.error,
          );
        else if (event.fence !== undefined)
          executions
            .get(executionKey({ storageKey: event.storageKey, fence: event.fence }))
            ?.addEvent('idem.store_error', method);
        count(event, 'store_error', method);
        return;
      }
      case 'store_call':
        storeDuration?.record(event.durationMs / 1_000, {
          [ATTR.storeMethod]: event.method,
          [ATTR.storeOutcome]: event.ok ? 'ok' : 'error',
        });
        return;
      case 'completed': {
        const parent = executions.get(executionKey(event));
        finished(
          SPAN.complete,
          event.durationMs,
          {
            ...base(event),
            [ATTR.fence]: event.fence,
            [ATTR.outcomeBytes]: event.outcomeBytes,
            [ATTR.result]: 'completed',
          },
          undefined,
          parent,
        );
        outcomeSize?.record(event.outcomeBytes, labels(event));
        return;
      }
      case 'lease_lost':
        executions.get(executionKey(event))?.addEvent('idem.lease_lost', { phase: event.phase });
        count(event, 'lease_lost', { phase: event.phase });
        return;
      case 'released':
      case 'outcome_not_recorded':
      case 'completion_abandoned':
        executions.get(executionKey(event))?.addEvent(`idem.${event.type}`);
        return;
      case 'execution_end': {
        const key = executionKey(event);
        const span = executions.get(key);
        if (span) {
          executions.delete(key);
          span.setAttribute(ATTR.result, event.result);
          if (FAILED.has(event.result))
            span.setStatus({ code: SpanStatusCode.ERROR, message: event.result });
          span.end();
        }
        inFlight?.add(-1, labels(event));
        executionDuration?.record(
          event.durationMs / 1_000,
          labels(event, { [ATTR.result]: event.result }),
        );
        return;
      }
    }
  };
}

function fail(span: Span, error: unknown): void {
  if (error instanceof Error) span.recordException(error);
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}
