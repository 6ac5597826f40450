import type { ExecutionEndResult, IdemEvent, IdemEventListener } from '@idem/core';
import {
  type Attributes,
  type Counter,
  context,
  type Histogram,
  type Meter,
  type MeterProvider,
  metrics,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
  type UpDownCounter,
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
  /**
   * Most distinct `idem.operation` values put on metrics. Operations past it are counted
   * under `idem.operation: "_other"` (spans keep the operation as it is). An operation is
   * meant to be a route, but `@idem/http`'s default is the request's path when the framework
   * names no route (Next.js route handlers, Bun, Deno, workers): one series per order id
   * without this bound. `Infinity` removes it. @default 100
   */
  maxOperations?: number;
}

/** The `idem.operation` metric label of operations past `maxOperations`. */
export const OTHER_OPERATION = '_other';

/** The longest operation (UTF-16 code units) a metric label keeps; longer ones are `_other`. */
const MAX_OPERATION_LABEL = 256;

/** A count option: a non-negative integer, or `Infinity`. */
function countOption(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (value === Number.POSITIVE_INFINITY || (Number.isSafeInteger(value) && value >= 0))
    return value;
  throw new RangeError(`${name} must be a non-negative integer or Infinity; got ${String(value)}`);
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
 * A duration from an event as a span length: a non-negative finite number of ms, else 0 (a
 * `NaN` start time would reach the exporter, whose batch may then fail as a whole).
 */
const spanMs = (ms: number | undefined): number =>
  typeof ms === 'number' && ms > 0 && ms < Number.POSITIVE_INFINITY ? ms : 0;

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
  const maxOpen = countOption('maxOpenExecutions', options.maxOpenExecutions, 10_000);
  const maxOperations = countOption('maxOperations', options.maxOperations, 100);
  /** Operations admitted as metric labels; only grows, so a label never changes for one. */
  const operations = new Set<string>();
  const operationLabel = (operation: string): string => {
    if (operations.has(operation)) return operation;
    // A client's path (a route Express or Hono did not match yet) can be kilobytes long: one
    // such label is sent with every series at every export. It takes no slot either.
    if (typeof operation !== 'string' || operation.length > MAX_OPERATION_LABEL)
      return OTHER_OPERATION;
    if (operations.size >= maxOperations) return OTHER_OPERATION;
    operations.add(operation);
    return operation;
  };
  // Without a meter of the caller's, the global provider is read at each event: the metrics
  // API has no proxy (unlike the tracer's), so a meter taken before the SDK registered its
  // provider would record nothing, ever. Instruments are made again when the provider changes.
  let provider: MeterProvider | undefined;
  let made: Instruments | undefined =
    options.metrics === false || options.meter === undefined
      ? undefined
      : instrumentsOf(options.meter);
  const instruments = (): Instruments | undefined => {
    if (options.metrics === false || options.meter !== undefined) return made;
    const current = metrics.getMeterProvider();
    if (current !== provider) {
      provider = current;
      made = instrumentsOf(current.getMeter(SCOPE_NAME));
    }
    return made;
  };
  /** Open `idem.execute` spans by storage key and fence. */
  const executions = new Map<string, Span>();

  const base = (event: IdemEvent): Attributes =>
    event.operation === undefined
      ? { [ATTR.storageKey]: event.storageKey }
      : { [ATTR.storageKey]: event.storageKey, [ATTR.operation]: event.operation };
  const labels = (event: IdemEvent, extra: Attributes = {}): Attributes =>
    event.operation === undefined
      ? extra
      : { [ATTR.operation]: operationLabel(event.operation), ...extra };
  const count = (
    m: Instruments | undefined,
    event: IdemEvent,
    result: string,
    extra: Attributes = {},
  ) => guard(() => m?.results.add(1, labels(event, { [ATTR.result]: result, ...extra })));

  /**
   * A span that ran for `durationMs` and ended `beforeMs` before now (the acquire of a replay
   * ended when the decoding began), under `parent` (default: the active context).
   */
  function finished(
    name: string,
    durationMs: number,
    attributes: Attributes,
    more: { error?: unknown; parent?: Span | undefined; beforeMs?: number } = {},
  ): void {
    if (!tracer) return;
    const { error, parent } = more;
    guard(() => {
      const end = nowMs() - spanMs(more.beforeMs);
      const ctx = parent ? trace.setSpan(context.active(), parent) : context.active();
      const span = tracer.startSpan(
        name,
        { kind: SpanKind.INTERNAL, startTime: end - spanMs(durationMs), attributes },
        ctx,
      );
      try {
        if (error !== undefined) fail(span, error);
      } finally {
        span.end(end);
      }
    });
  }

  const executionKey = (event: { storageKey: string; fence: number }) =>
    `${event.storageKey}#${event.fence}`;

  function openExecution(event: Extract<IdemEvent, { type: 'miss' }>, attributes: Attributes) {
    // One span a storage key and fence: a second acquisition with the same pair (two engines
    // on different stores sharing this listener) gets none rather than leaking the first.
    const key = executionKey(event);
    if (!tracer || executions.size >= maxOpen || executions.has(key)) return;
    guard(() => {
      const span = tracer.startSpan(
        SPAN.execute,
        { kind: SpanKind.INTERNAL, attributes },
        context.active(),
      );
      executions.set(key, span);
    });
  }

  /** Adds an event to the open execute span of `event`, if there is one. */
  function note(
    event: { storageKey: string; fence: number },
    name: string,
    attributes?: Attributes,
  ): void {
    const span = executions.get(executionKey(event));
    if (span) guard(() => span.addEvent(name, attributes));
  }

  return (event) => {
    let m: Instruments | undefined;
    guard(() => {
      m = instruments();
    });
    switch (event.type) {
      case 'miss': {
        const attributes = {
          ...base(event),
          [ATTR.fence]: event.fence,
          [ATTR.takeover]: event.takeover,
        };
        finished(SPAN.acquire, event.durationMs, { ...attributes, [ATTR.result]: 'miss' });
        openExecution(event, attributes);
        count(m, event, 'miss', { [ATTR.takeover]: event.takeover });
        guard(() => m?.inFlight.add(1, labels(event)));
        return;
      }
      case 'hit': {
        const attributes = {
          ...base(event),
          [ATTR.fence]: event.fence,
          [ATTR.outcomeBytes]: event.outcomeBytes,
          [ATTR.result]: 'hit',
        };
        // The acquire ended when the store answered, `decodeMs` before the event.
        finished(SPAN.acquire, event.durationMs, attributes, { beforeMs: event.decodeMs });
        finished(SPAN.replay, event.decodeMs, attributes);
        count(m, event, 'hit');
        return;
      }
      case 'conflict':
        finished(SPAN.acquire, event.durationMs, {
          ...base(event),
          [ATTR.fence]: event.fence,
          [ATTR.retryAfterMs]: event.retryAfterMs,
          [ATTR.result]: 'conflict',
        });
        count(m, event, 'conflict');
        return;
      case 'mismatch':
        finished(SPAN.acquire, event.durationMs, { ...base(event), [ATTR.result]: 'mismatch' });
        count(m, event, 'mismatch');
        return;
      case 'outcome_corrupt': {
        const attributes = {
          ...base(event),
          [ATTR.fence]: event.fence,
          [ATTR.result]: 'outcome_corrupt',
        };
        finished(SPAN.acquire, event.durationMs, attributes, { beforeMs: event.decodeMs });
        finished(SPAN.replay, event.decodeMs, attributes, { error: event.error });
        count(m, event, 'outcome_corrupt');
        return;
      }
      case 'store_error': {
        const method = { [ATTR.storeMethod]: event.method };
        if (event.method === 'acquire')
          finished(
            SPAN.acquire,
            event.durationMs,
            { ...base(event), ...method, [ATTR.result]: 'store_error' },
            { error: event.error },
          );
        else if (event.fence !== undefined)
          note({ storageKey: event.storageKey, fence: event.fence }, 'idem.store_error', method);
        count(m, event, 'store_error', method);
        return;
      }
      case 'store_call':
        guard(() =>
          m?.storeDuration.record(event.durationMs / 1_000, {
            [ATTR.storeMethod]: event.method,
            [ATTR.storeOutcome]: event.ok ? 'ok' : 'error',
          }),
        );
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
          { parent },
        );
        guard(() => m?.outcomeSize.record(event.outcomeBytes, labels(event)));
        return;
      }
      case 'lease_lost':
        note(event, 'idem.lease_lost', { [ATTR.leaseLostPhase]: event.phase });
        count(m, event, 'lease_lost', { [ATTR.leaseLostPhase]: event.phase });
        return;
      case 'released':
      case 'outcome_not_recorded':
      case 'completion_abandoned':
        note(event, `idem.${event.type}`);
        return;
      case 'execution_end': {
        const key = executionKey(event);
        const span = executions.get(key);
        if (span) {
          executions.delete(key);
          guard(() => {
            span.setAttribute(ATTR.result, event.result);
            if (FAILED.has(event.result))
              span.setStatus({ code: SpanStatusCode.ERROR, message: event.result });
            span.end();
          });
        }
        guard(() => m?.inFlight.add(-1, labels(event)));
        guard(() =>
          m?.executionDuration.record(
            event.durationMs / 1_000,
            labels(event, { [ATTR.result]: event.result }),
          ),
        );
        return;
      }
    }
  };
}

interface Instruments {
  results: Counter;
  storeDuration: Histogram;
  inFlight: UpDownCounter;
  outcomeSize: Histogram;
  executionDuration: Histogram;
}

function instrumentsOf(meter: Meter): Instruments {
  return {
    results: meter.createCounter(METRIC.results, {
      description: 'Results of idempotent requests and executions',
    }),
    storeDuration: meter.createHistogram(METRIC.storeDuration, {
      description: 'Duration of store calls',
      unit: 's',
      advice: { explicitBucketBoundaries: STORE_BUCKETS },
    }),
    inFlight: meter.createUpDownCounter(METRIC.inFlight, {
      description: 'Acquisitions (leases) this process holds',
    }),
    outcomeSize: meter.createHistogram(METRIC.outcomeSize, {
      description: 'Size of recorded outcomes as stored',
      unit: 'By',
    }),
    executionDuration: meter.createHistogram(METRIC.executionDuration, {
      description: 'How long acquisitions were held, from acquire to the end of the execution',
      unit: 's',
    }),
  };
}

/**
 * Runs one span or metric update: an SDK that throws there (a span processor, an exporter
 * wired synchronously, a meter) loses that update only, never the others of the event, so
 * `idem.leases.in_flight` stays balanced and `idem.results` counts every result.
 */
function guard(update: () => void): void {
  try {
    update();
  } catch {
    // The SDK's failure; core would ignore it anyway, but the event's other updates run.
  }
}

function fail(span: Span, error: unknown): void {
  if (error instanceof Error) span.recordException(error);
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}
