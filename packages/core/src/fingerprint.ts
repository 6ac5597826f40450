import { canonicalJson, type JsonValue } from './canonical-json.js';
import { digestParts, type EncodedPart } from './encoding.js';
import { InvalidInputError } from './errors.js';

/** The request parts a fingerprint covers. */
export interface FingerprintInput {
  /** HTTP method or operation verb; compared case-insensitively. */
  method?: string;
  /** Route or operation name. */
  route?: string;
  /**
   * The body. A JSON value is encoded as canonical JSON (key order and number spelling do
   * not matter); a `Uint8Array` (a non-JSON body) is taken byte for byte.
   */
  body?: JsonValue | Uint8Array;
  /** Further parts that matter (a header, a query parameter), by name. */
  extras?: Readonly<Record<string, string | JsonValue>>;
  /**
   * Top-level JSON body fields to leave out (a client timestamp, a trace id), or paths
   * such as `metadata.traceId` for nested fields.
   */
  exclude?: readonly string[];
}

function omitPath(value: JsonValue, path: readonly string[]): JsonValue {
  if (path.length === 0 || value === null || typeof value !== 'object' || Array.isArray(value)) {
    return value;
  }
  const [head, ...rest] = path as [string, ...string[]];
  const obj = value as Record<string, JsonValue | undefined>;
  // Own members only: `constructor` or `__proto__` of a body that has none is nothing to omit.
  if (!Object.hasOwn(obj, head)) return value;
  const copy: Record<string, JsonValue | undefined> = { ...obj };
  if (rest.length === 0) delete copy[head];
  // Defined, not assigned: an own `__proto__` member stays a member, never the prototype.
  else
    Object.defineProperty(copy, head, {
      value: omitPath(obj[head] as JsonValue, rest),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  return copy;
}

/**
 * A plain object (or an array) whose own members are the parts: a `Map`, `Headers` or
 * `URLSearchParams` has none, so every request's extras hashed alike (todayrev).
 */
function isNamedParts(extras: unknown): boolean {
  if (typeof extras !== 'object' || extras === null) return false;
  if (Array.isArray(extras)) return true;
  const proto = Object.getPrototypeOf(extras);
  return proto === Object.prototype || proto === null;
}

/**
 * `InvalidInputError` for parts of the wrong type (from JavaScript, or a cast): the encoding
 * takes a string's UTF-8 and a `Uint8Array`'s bytes, and anything else (a route object, a
 * number) wrote no bytes and no valid length, so every such fingerprint was the digest of
 * nothing, the same for every request (the mutcore review).
 */
function checkInput(input: FingerprintInput): void {
  if (typeof input !== 'object' || input === null)
    throw new InvalidInputError('fingerprint needs an object of request parts');
  const { method, route, extras, exclude } = input;
  if (method !== undefined && typeof method !== 'string')
    throw new InvalidInputError('fingerprint: method must be a string');
  if (route !== undefined && typeof route !== 'string')
    throw new InvalidInputError('fingerprint: route must be a string');
  if (extras !== undefined && !isNamedParts(extras))
    throw new InvalidInputError('fingerprint: extras must be an object of named parts');
  if (
    exclude !== undefined &&
    !(Array.isArray(exclude) && exclude.every((path) => typeof path === 'string'))
  )
    throw new InvalidInputError('fingerprint: exclude must be an array of field paths');
}

/**
 * SHA-256 (hex) over a length-prefixed encoding of the request parts that matter: the
 * method, the route, the body (canonical JSON, or raw bytes) and sorted extras. Two
 * requests with the same fingerprint are treated as the same request.
 *
 * @throws NotCanonicalError when the body or an extra cannot be represented as JSON
 * @throws InvalidInputError when `method` or `route` is not a string, `extras` not an object
 *   or `exclude` not an array of strings (or `exclude` is given with a raw body)
 */
export function fingerprint(input: FingerprintInput): string {
  checkInput(input);
  const parts: EncodedPart[] = [];
  if (input.method !== undefined) parts.push(['method', input.method.toUpperCase()]);
  if (input.route !== undefined) parts.push(['route', input.route]);
  if (input.body !== undefined) {
    if (input.body instanceof Uint8Array) {
      if (input.exclude?.length) {
        throw new InvalidInputError('exclude applies to JSON bodies, not to raw bytes');
      }
      parts.push(['body:bytes', input.body]);
    } else {
      let body = input.body;
      for (const path of input.exclude ?? []) body = omitPath(body, path.split('.'));
      parts.push(['body:json', canonicalJson(body)]);
    }
  }
  if (input.extras !== undefined) {
    for (const name of Object.keys(input.extras).sort()) {
      const extra = input.extras[name];
      if (extra === undefined) continue;
      parts.push([`extra:${name}`, canonicalJson(extra)]);
    }
  }
  return digestParts('idem/fingerprint/v1', parts);
}
