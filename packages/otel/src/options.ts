import { invalidRangeInput, quotedInput, unknownOptionMessage } from '@idem/core';
import type { Meter, Tracer } from '@opentelemetry/api';

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

const OPTION_NAMES: Record<keyof OtelListenerOptions, true> = {
  tracer: true,
  meter: true,
  spans: true,
  metrics: true,
  maxOpenExecutions: true,
  maxOperations: true,
};

/** What a refused value was, for the message (never the value itself: it may be an SDK object). */
function kind(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') {
    const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
    return typeof name === 'string' && name !== 'Object' ? `a ${name}` : 'an object';
  }
  return typeof value === 'string' ? quotedInput(value, 40) : String(value);
}

/** Whether `value` is an object with a function under each of `names`. */
function hasMethods(value: unknown, names: readonly string[]): boolean {
  if (typeof value !== 'object' || value === null) return false;
  return names.every((name) => typeof (value as Record<string, unknown>)[name] === 'function');
}

/**
 * The options, checked at creation: a misspelt name (`span: false`, `maxOpenExecution`)
 * would otherwise take its default without a word (spans recorded although switched off),
 * `spans: 'false'` would switch them on, and a tracer or meter that is not one (a provider,
 * `{}`) would record nothing, or fail with a bare TypeError.
 * @throws InvalidInputError naming the option (`INVALID_INPUT`; a `RangeError` too, as before)
 */
export function checkOptions(options: unknown): OtelListenerOptions {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options))
    throw invalidRangeInput(
      `the options of createOtelListener must be an object; got ${kind(options)}`,
    );
  const message = unknownOptionMessage('', options, OPTION_NAMES, '@idem/otel');
  if (message !== undefined) throw invalidRangeInput(message);
  const { tracer, meter, spans, metrics } = options as Record<string, unknown>;
  for (const [name, value] of [
    ['spans', spans],
    ['metrics', metrics],
  ] as const)
    if (value !== undefined && typeof value !== 'boolean')
      throw invalidRangeInput(`${name} must be true or false; got ${kind(value)}`);
  if (tracer !== undefined && !hasMethods(tracer, ['startSpan']))
    throw invalidRangeInput(
      `tracer must be an OpenTelemetry Tracer (with startSpan; from a provider's getTracer); got ${kind(tracer)}`,
    );
  if (
    meter !== undefined &&
    !hasMethods(meter, ['createCounter', 'createHistogram', 'createUpDownCounter'])
  )
    throw invalidRangeInput(
      `meter must be an OpenTelemetry Meter (with createCounter, createHistogram, createUpDownCounter; from a provider's getMeter); got ${kind(meter)}`,
    );
  return options as OtelListenerOptions;
}

/** A count option: a non-negative integer, or `Infinity`. */
export function countOption(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (value === Number.POSITIVE_INFINITY || (Number.isSafeInteger(value) && value >= 0))
    return value;
  throw invalidRangeInput(`${name} must be a non-negative integer or Infinity; got ${kind(value)}`);
}
