import { NotCanonicalError } from './errors.js';

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
 * {@link MAX_CANONICAL_DEPTH} levels is refused with `reason: 'too_deep'`.
 */
export function canonicalJson(value: unknown): string {
  // Fast path for what scopes and keys usually are: JSON.stringify already writes strings,
  // finite numbers (-0 as 0), booleans and null, alone or in a flat dense array, canonically.
  if (isFlat(value)) return JSON.stringify(value);
  if (Array.isArray(value)) {
    let flat = true;
    for (let i = 0; i < value.length && flat; i++) flat = i in value && isFlat(value[i]);
    if (flat) return JSON.stringify(value);
  }
  const parts: string[] = [];
  write(value, '', new Set(), parts, 0);
  return parts.join('');
}

function isFlat(value: unknown): boolean {
  return (
    value === null ||
    typeof value === 'string' ||
    typeof value === 'boolean' ||
    (typeof value === 'number' && Number.isFinite(value))
  );
}

function write(
  value: unknown,
  path: string,
  seen: Set<object>,
  out: string[],
  depth: number,
): void {
  if (value === null) {
    out.push('null');
    return;
  }
  switch (typeof value) {
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'number':
      if (!Number.isFinite(value)) throw new NotCanonicalError(`Non-finite number ${value}`, path);
      // Object.is(-0, 0) is false; JSON has one zero.
      out.push(value === 0 ? '0' : String(value));
      return;
    case 'string':
      out.push(JSON.stringify(value));
      return;
    case 'undefined':
      throw new NotCanonicalError('undefined is not JSON', path);
    case 'bigint':
      throw new NotCanonicalError('BigInt is not JSON (convert it to a string first)', path);
    case 'function':
      throw new NotCanonicalError('A function is not JSON', path);
    case 'symbol':
      throw new NotCanonicalError('A symbol is not JSON', path);
  }
  const obj = value as object;
  if (seen.has(obj)) throw new NotCanonicalError('Cycle detected', path);
  if (depth >= MAX_CANONICAL_DEPTH) {
    throw new NotCanonicalError(
      `Nesting deeper than ${MAX_CANONICAL_DEPTH} levels`,
      // The full path of a hostile input is as long as its nesting: show its start only.
      path.length > 200 ? `${path.slice(0, 200)}...` : path,
      'too_deep',
    );
  }
  if (typeof (obj as { toJSON?: unknown }).toJSON === 'function') {
    const replaced = (obj as { toJSON: () => unknown }).toJSON();
    seen.add(obj);
    // A replacement counts as a level, so an endless chain of toJSON results ends too.
    write(replaced, path, seen, out, depth + 1);
    seen.delete(obj);
    return;
  }
  seen.add(obj);
  if (Array.isArray(obj)) {
    out.push('[');
    for (let i = 0; i < obj.length; i++) {
      if (i > 0) out.push(',');
      write(obj[i], `${path}/${i}`, seen, out, depth + 1);
    }
    out.push(']');
  } else {
    const proto = Object.getPrototypeOf(obj);
    if (proto !== Object.prototype && proto !== null) {
      const name = (obj as { constructor?: { name?: string } }).constructor?.name ?? 'object';
      throw new NotCanonicalError(`A ${name} is not a plain JSON object`, path);
    }
    const record = obj as Record<string, unknown>;
    const keys = Object.keys(record).sort();
    out.push('{');
    let first = true;
    for (const key of keys) {
      const child = record[key];
      if (child === undefined) continue;
      if (!first) out.push(',');
      first = false;
      out.push(JSON.stringify(key), ':');
      write(child, `${path}/${escapePointer(key)}`, seen, out, depth + 1);
    }
    out.push('}');
  }
  seen.delete(obj);
}
