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
  trace,
  type UpDownCounter,
} from '@opentelemetry/api';
import { ATTR, METRIC, SPAN } from './attributes.js';
import { checkOptions, countOption, type OtelListenerOptions } from './options.js';

export type { OtelListenerOptions } from './options.js';

/** The `idem.operation` metric label of operations past `maxOperations`. */
export const OTHER_OPERATION = '_other';

/** The longest operation (UTF-16 code units) a metric label keeps; longer ones are `_other`. */
const MAX_OPERATION_LABEL = 256;

const SCOPE_NAME = '@idem/otel';
// Store calls take from well under a millisecond (memory) to seconds (a timeout).
const STORE_BUCKETS = [
  0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
const FAILED: ReadonlySet<ExecutionEndResult> = new Set(['lease_lost', 'abandoned']);
/** Slots of the count of acquisitions held without an execute span (a power of two). */
const UNTRACKED_SLOTS = 4096;

/** The slot of an execution key among {@link UNTRACKED_SLOTS} (FNV-1a). */
function untrackedSlot(key: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  return (hash >>> 0) & (UNTRACKED_SLOTS - 1);
}

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
export function createOtelListener(given?: OtelListenerOptions): IdemEventListener {
  const options = checkOptions(given);
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
  // provider would record nothing, ever. Instruments are made again when the provider changes
  // (once a provider: one registered again after `metrics.disable()` gets its own back).
  let provider: MeterProvider | undefined;
  const byProvider = new WeakMap<MeterProvider, Instruments>();
  let made: Instruments | undefined;
  // A given meter whose instruments cannot be made (it throws) does not fail the listener's
  // creation: they are asked for again at the next event, as the global provider's are.
  if (options.metrics !== false && options.meter !== undefined)
    guard(() => {
      made = instrumentsOf(options.meter as Meter);
    });
  /**
   * Acquisitions held now, by `idem.operation` label (undefined: no operation); an entry
   * leaves at 0, so at most one per label in flight. The instruments of a provider that
   * becomes the global one are brought to these (see `tell`), else each acquisition held
   * across the change (an SDK started after the server) would take `idem.leases.in_flight`
   * one below zero for good at its end.
   */
  const held = new Map<string | undefined, number>();
  const instruments = (): Instruments | undefined => {
    if (options.metrics === false) return made;
    if (options.meter !== undefined) {
      if (made === undefined) {
        made = instrumentsOf(options.meter);
        catchUp(made);
      }
      return made;
    }
    const current = metrics.getMeterProvider();
    if (current !== provider) {
      let next = byProvider.get(current);
      if (next === undefined) {
        // A provider whose getMeter (or an instrument's creation) throws is asked again at
        // the next event: `provider` moves only once its instruments are made.
        next = instrumentsOf(current.getMeter(SCOPE_NAME));
        byProvider.set(current, next);
      }
      provider = current;
      made = next;
      catchUp(next);
    }
    return made;
  };
  /** Brings `m`'s in-flight counts to the acquisitions held now. */
  const catchUp = (m: Instruments) => {
    for (const label of new Set([...held.keys(), ...m.told.keys()]))
      tell(m, label, (held.get(label) ?? 0) - (m.told.get(label) ?? 0));
  };
  /** Adds `delta` to `m`'s in-flight count of `label`, and to what `m` was told. */
  const tell = (m: Instruments, label: string | undefined, delta: number) => {
    if (delta === 0) return;
    const n = (m.told.get(label) ?? 0) + delta;
    if (n === 0) m.told.delete(label);
    else m.told.set(label, n);
    guard(() => m.inFlight.add(delta, operationAttribute(label)));
  };
  /** The in-flight count of `event`'s label moved by `delta` (never below 0: an end without its miss). */
  const inFlight = (m: Instruments | undefined, event: IdemEvent, delta: 1 | -1) => {
    const label = event.operation === undefined ? undefined : operationLabel(event.operation);
    const n = (held.get(label) ?? 0) + delta;
    if (n < 0) return;
    if (n === 0) held.delete(label);
    else held.set(label, n);
    if (m) tell(m, label, delta);
  };
  /**
   * Open `idem.execute` spans by storage key and fence, with how many acquisitions hold the
   * pair: two at once (two engines on different stores sharing this listener, each with its
   * own fences) cannot be told apart by their events, so the span ends when the second
   * begins (`idem.execution_shared`, no result) and the pair is forgotten when both ended.
   */
  const executions = new Map<string, { span: Span | undefined; holders: number }>();
  /**
   * Acquisitions held without an entry in `executions` (begun past `maxOpenExecutions`, or
   * given no span by the tracer), counted by a hash of their pair in a table of fixed size,
   * made at the first one. A pair gets an entry only while its slot counts none: else another
   * store's acquisition of the same pair, begun past the limit, might hold it uncounted, and
   * its end would end the entry's span with its own result (its events on that span, in
   * another request's trace). A slot shared by chance only costs a span, never misplaces one.
   */
  let untracked: Uint32Array | undefined;
  /**
   * The pairs counted in `untracked`, each with its count: an end without an entry takes back
   * only what its own pair's acquisitions added. An end whose acquisition this listener never
   * saw (a wrapper that samples events, a listener attached mid-flight) is ignored, instead of
   * emptying a slot another pair's acquisition counts (the coreleft2 review). At most
   * UNTRACKED_SLOTS pairs; past that an acquisition is counted in `anonymous` only, and an end
   * of a pair not named here takes back from its slot's anonymous count, as before.
   */
  let counted: Map<string, number> | undefined;
  let anonymous: Uint32Array | undefined;
  const untrack = (key: string, delta: 1 | -1) => {
    if (delta > 0) {
      untracked ??= new Uint32Array(UNTRACKED_SLOTS);
      counted ??= new Map();
      const slot = untrackedSlot(key);
      const n = counted.get(key);
      if (n !== undefined || counted.size < UNTRACKED_SLOTS) counted.set(key, (n ?? 0) + 1);
      else {
        anonymous ??= new Uint32Array(UNTRACKED_SLOTS);
        anonymous[slot] = (anonymous[slot] ?? 0) + 1;
      }
      untracked[slot] = (untracked[slot] ?? 0) + 1;
      return;
    }
    if (untracked === undefined || counted === undefined) return;
    const slot = untrackedSlot(key);
    const n = counted.get(key);
    if (n !== undefined) {
      if (n > 1) counted.set(key, n - 1);
      else counted.delete(key);
    } else if (anonymous !== undefined && (anonymous[slot] ?? 0) > 0) {
      anonymous[slot] = (anonymous[slot] ?? 0) - 1;
    } else return; // An end without its miss: nothing of its own to take back.
    untracked[slot] = (untracked[slot] ?? 0) - 1;
  };

  const base = (event: IdemEvent): Attributes =>
    event.operation === undefined
      ? { [ATTR.storageKey]: event.storageKey }
      : { [ATTR.storageKey]: event.storageKey, [ATTR.operation]: event.operation };
  const labels = (event: IdemEvent, extra: Attributes = {}): Attributes =>
    event.operation === undefined
      ? extra
      : { [ATTR.operation]: operationLabel(event.operation), ...extra };
  const operationAttribute = (label: string | undefined): Attributes =>
    label === undefined ? {} : { [ATTR.operation]: label };
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
    const key = executionKey(event);
    const open = executions.get(key);
    if (open) {
      // A second acquisition with the same pair: from here on neither's events (a release,
      // a lost lease, the end) could be told apart, nor put on the right request's trace.
      open.holders++;
      const { span } = open;
      open.span = undefined;
      if (span)
        guard(() => {
          try {
            span.addEvent('idem.execution_shared');
          } finally {
            span.end();
          }
        });
      return;
    }
    if (!tracer) return;
    if (
      executions.size < maxOpen &&
      (untracked === undefined || untracked[untrackedSlot(key)] === 0)
    )
      guard(() => {
        const span: unknown = tracer.startSpan(
          SPAN.execute,
          { kind: SpanKind.INTERNAL, attributes },
          context.active(),
        );
        // A tracer that is not quite one (a wrapper that forgot to return the span) gives no
        // span to end: nothing is kept for it.
        if (typeof span === 'object' && span !== null)
          executions.set(key, { span: span as Span, holders: 1 });
      });
    if (!executions.has(key)) untrack(key, 1);
  }

  /** Adds an event to the open execute span of `event`, if there is one. */
  function note(
    event: { storageKey: string; fence: number },
    name: string,
    attributes?: Attributes,
  ): void {
    const span = executions.get(executionKey(event))?.span;
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
        inFlight(m, event, 1);
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
        const parent = executions.get(executionKey(event))?.span;
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
        const open = executions.get(key);
        if (open) {
          open.holders--;
          if (open.holders <= 0) executions.delete(key);
        } else if (tracer) untrack(key, -1);
        const span = open?.span;
        if (span)
          guard(() => {
            try {
              span.setAttribute(ATTR.result, event.result);
              if (FAILED.has(event.result))
                span.setStatus({ code: SpanStatusCode.ERROR, message: event.result });
            } finally {
              span.end();
            }
          });
        inFlight(m, event, -1);
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
  /** What `inFlight` was told by label: acquisitions held while these were the instruments. */
  told: Map<string | undefined, number>;
  results: Counter;
  storeDuration: Histogram;
  inFlight: UpDownCounter;
  outcomeSize: Histogram;
  executionDuration: Histogram;
}

function instrumentsOf(meter: Meter): Instruments {
  return {
    told: new Map(),
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
