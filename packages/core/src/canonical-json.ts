import { cutAt, NotCanonicalError, type NotCanonicalReason } from './errors.js';

/** A value that canonical JSON can carry. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | readonly JsonValue[]
  | { readonly [key: string]: JsonValue | undefined };

/**
 * Deepest nesting of arrays and objects that {@link canonicalJson} accepts. Deeper input is
 * refused with a `NotCanonicalError` whose `reason` is `'too_deep'`, so a hostile body
 * cannot exhaust the stack. Real request bodies stay far below it.
 */
export const MAX_CANONICAL_DEPTH = 256;

function escapePointer(segment: string): string {
  return segment.replace(/~/g, '~0').replace(/\//g, '~1');
}

/**
 * Serialises `value` as canonical JSON: object keys sorted by UTF-16 code units (as in
 * RFC 8785), numbers in ECMAScript's shortest round-trip form with `-0` written as `0`,
 * strings escaped by `JSON.stringify` (lone surrogates escaped as `\uXXXX`), no whitespace.
 *
 * Refuses with {@link NotCanonicalError} what JSON cannot carry faithfully instead of
 * guessing: functions, symbols, bigints, non-finite numbers, cycles, `undefined` outside an
 * object property, Maps, Sets, typed arrays and other non-plain objects. Object properties
 * whose value is `undefined` are omitted, as `JSON.stringify` does. Objects with a
 * `toJSON` method (such as `Date`) are replaced by its result. Nesting deeper than
 * {@link MAX_CANONICAL_DEPTH} levels is refused with `reason: 'too_deep'`. A value whose own
 * code throws while it is read (a `toJSON`, a getter, a Proxy's trap) is refused too
 * (`not_json`, at its path), with what it threw as the error's `cause`.
 */
export function canonicalJson(value: unknown): string {
  // Fast path for what scopes and keys usually are: JSON.stringify already writes strings,
  // finite numbers (-0 as 0), booleans and null, alone or in a flat dense array, canonically.
  if (isFlat(value)) return JSON.stringify(value);
  try {
    if (Array.isArray(value)) {
      let flat = true;
      for (let i = 0; i < value.length && flat; i++) flat = i in value && isFlat(value[i]);
      if (flat) return JSON.stringify(value);
    }
    return write(value, new Set(), 0);
  } catch (thrown) {
    const error = refusalOf(thrown);
    let path = '';
    for (let i = error.segments.length - 1; i >= 0; i--) path += `/${error.segments[i]}`;
    // The full path of a hostile input is as long as its nesting: show its start only.
    if (error.reason === 'too_deep' && path.length > 200)
      path = `${path.slice(0, cutAt(path, 200))}...`;
    throw new NotCanonicalError(error.message, path, error.reason, { cause: error.cause });
  }
}

function isFlat(value: unknown): boolean {
  return (
    value === null ||
    typeof value === 'string' ||
    typeof value === 'boolean' ||
    (typeof value === 'number' && Number.isFinite(value))
  );
}

/**
 * A value canonical JSON refuses, on its way up to {@link canonicalJson}: each container it
 * leaves adds its segment of the path (innermost first), so that no path is built for the
 * values that are fine.
 */
class Refusal {
  readonly segments: string[] = [];
  constructor(
    readonly message: string,
    readonly reason: NotCanonicalReason = 'not_json',
    readonly cause?: unknown,
  ) {}
}

function write(value: unknown, seen: Set<object>, depth: number): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new Refusal(`Non-finite number ${value}`);
      // Object.is(-0, 0) is false; JSON has one zero.
      return value === 0 ? '0' : String(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
      throw new Refusal('undefined is not JSON');
    case 'bigint':
      throw new Refusal('BigInt is not JSON (convert it to a string first)');
    case 'function':
      throw new Refusal('A function is not JSON');
    case 'symbol':
      throw new Refusal('A symbol is not JSON');
  }
  if (value === null) return 'null';
  try {
    return writeObject(value as object, seen, depth);
  } catch (error) {
    throw refusalOf(error);
  }
}

/**
 * `error` as a {@link Refusal}: one already is; anything else was thrown by the value's own
 * code while it was read (a `toJSON`, a getter, a Proxy's trap, a revoked Proxy), refused as
 * not JSON where it happened, with what it threw as `cause` (a `NotCanonicalError`, never the
 * caller's own error escaping untyped).
 */
function refusalOf(error: unknown): Refusal {
  return error instanceof Refusal
    ? error
    : new Refusal('Reading the value threw', 'not_json', error);
}

function writeObject(obj: object, seen: Set<object>, depth: number): string {
  if (seen.has(obj)) throw new Refusal('Cycle detected');
  if (depth >= MAX_CANONICAL_DEPTH)
    throw new Refusal(`Nesting deeper than ${MAX_CANONICAL_DEPTH} levels`, 'too_deep');
  if (typeof (obj as { toJSON?: unknown }).toJSON === 'function') {
    const replaced = (obj as { toJSON: () => unknown }).toJSON();
    seen.add(obj);
    // A replacement counts as a level, so an endless chain of toJSON results ends too.
    const text = write(replaced, seen, depth + 1);
    seen.delete(obj);
    return text;
  }
  seen.add(obj);
  let out: string;
  if (Array.isArray(obj)) {
    let i = 0;
    out = '[';
    try {
      for (; i < obj.length; i++) {
        if (i > 0) out += ',';
        out += write(obj[i], seen, depth + 1);
      }
    } catch (thrown) {
      const error = refusalOf(thrown);
      error.segments.push(String(i));
      throw error;
    }
    out += ']';
  } else {
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      const name = (obj as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      throw new Refusal(`A ${name} is not a plain JSON object`);
    }
    const record = obj as Record<string, unknown>;
    const keys = Object.keys(record).sort();
    let key = '';
    out = '{';
    try {
      for (key of keys) {
        const child = record[key];
        if (child === undefined) continue;
        if (out.length > 1) out += ',';
        out += `${JSON.stringify(key)}:${write(child, seen, depth + 1)}`;
      }
    } catch (thrown) {
      const error = refusalOf(thrown);
      error.segments.push(escapePointer(key));
      throw error;
    }
    out += '}';
  }
  seen.delete(obj);
  return out;
}
