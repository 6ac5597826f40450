import type { JsonValue } from '@idem/core';
import { isAmbiguousJson } from './json-ambiguity.js';
import { jsonTextOf } from './json-text.js';
import { canonicalMultipart, isMultipartFormContentType } from './multipart.js';

/**
 * A request body as the fingerprint sees it. A JSON body MAY carry its bytes: they are
 * fingerprinted instead of the value when canonical JSON refuses it (nested too deep).
 */
export type RequestBody =
  | { kind: 'none' }
  | { kind: 'json'; value: JsonValue; bytes?: Uint8Array }
  | { kind: 'bytes'; bytes: Uint8Array };

/** Thrown by a body reader when the body is larger than the limit; answered with 413. */
export class BodyTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`The request body is larger than ${limit} bytes`);
    this.name = 'BodyTooLargeError';
  }
}

/**
 * Thrown by a Node body reader when something before the middleware read the request body
 * (a raw-body reader, a signature check) and kept neither the parsed body (`req.body`) nor its
 * bytes (`req.rawBody`): the body cannot be fingerprinted, and taking it as empty would replay
 * this request's outcome to another body under the same key. Nothing is run or stored and no
 * key is taken; the framework answers 500.
 */
export class BodyAlreadyReadError extends Error {
  constructor() {
    super(
      'The request body was read before the idempotency middleware, which can no longer fingerprint it: mount the middleware before the code that reads the body, or have that code keep the bytes as req.rawBody (a Buffer or string) or the parsed body as req.body',
    );
    this.name = 'BodyAlreadyReadError';
  }
}

// Stateless between calls (no `stream` option): one for every body.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/** True for `application/json` and `application/*+json` content types. */
export function isJsonContentType(contentType: string | null | undefined): boolean {
  return typeof contentType === 'string' && JSON_TYPE.test(contentType.trim());
}

/**
 * Reads a body stream up to `limit` bytes. Throws {@link BodyTooLargeError} as soon as the
 * limit is passed, so an oversized body is never buffered whole.
 */
export async function readBodyLimited(
  stream: AsyncIterable<Uint8Array | string> | ReadableStream<Uint8Array> | null,
  limit: number,
): Promise<Uint8Array> {
  if (stream === null) return new Uint8Array();
  const parts: Uint8Array[] = [];
  let size = 0;
  const encoder = new TextEncoder();
  if (stream instanceof ReadableStream) {
    // Read by hand: leaving a `for await` awaits the stream's cancel, and the cancel of a tee
    // branch (`request.clone().body`) settles only once the other branch is cancelled too,
    // so an oversize body would never get its 413.
    const reader = (stream as ReadableStream<Uint8Array | string>).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const bytes = typeof value === 'string' ? encoder.encode(value) : value;
      size += bytes.length;
      if (size > limit) {
        reader.cancel().catch(() => {});
        throw new BodyTooLargeError(limit);
      }
      parts.push(bytes);
    }
  } else {
    for await (const part of stream as AsyncIterable<Uint8Array | string>) {
      const bytes = typeof part === 'string' ? encoder.encode(part) : part;
      size += bytes.length;
      // Leaving the loop by a throw destroys the stream, so the rest is never read.
      if (size > limit) throw new BodyTooLargeError(limit);
      parts.push(bytes);
    }
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Interprets raw body bytes: JSON content types are parsed so that key order and spacing
 * do not change the fingerprint; a `multipart/form-data` body becomes its parts without the
 * boundary ({@link canonicalMultipart}); anything else (or JSON that does not parse) stays bytes.
 * @throws MalformedBodyError for a multipart body that does not parse (answered with 400)
 * @throws BodyPartsLimitError for a multipart body past the part caps (answered with 413)
 */
export function bodyFromBytes(
  bytes: Uint8Array,
  contentType: string | null | undefined,
): RequestBody {
  if (bytes.length === 0) return { kind: 'none' };
  if (isJsonContentType(contentType)) {
    try {
      const text = strictUtf8.decode(bytes);
      const value = JSON.parse(text);
      // Numbers JSON.parse cannot hold exactly (0.30000000000000001, 1e-400, integers past
      // 2^53) and repeated member names would make different bodies look alike once parsed:
      // such a body is fingerprinted by its bytes.
      if (!isAmbiguousJson(text)) return { kind: 'json', value, bytes };
    } catch {
      // Not valid JSON (or, in theory, too deep for JSON.parse): the bytes are the request.
    }
  }
  if (isMultipartFormContentType(contentType)) {
    return { kind: 'bytes', bytes: canonicalMultipart(bytes, contentType as string) };
  }
  return { kind: 'bytes', bytes };
}

/**
 * Interprets a body a framework already parsed: bytes and strings as sent, `undefined` or
 * `null` as none, anything else as the JSON value it was parsed from (measured by its JSON
 * text against `limit`).
 * @throws BodyTooLargeError past `limit` bytes
 */
export function bodyFromParsed(
  parsed: unknown,
  contentType: string | null | undefined,
  limit: number,
): RequestBody {
  if (parsed === undefined || parsed === null) return { kind: 'none' };
  const bytes =
    parsed instanceof Uint8Array
      ? parsed
      : typeof parsed === 'string'
        ? new TextEncoder().encode(parsed)
        : undefined;
  if (bytes) {
    if (bytes.length > limit) throw new BodyTooLargeError(limit);
    return bodyFromBytes(bytes, contentType);
  }
  // Iterative past JSON.stringify's depth; its length bounds the text (a cycle included).
  const text = jsonTextOf(parsed, limit);
  if (text === undefined) throw new BodyTooLargeError(limit);
  if (!NON_ASCII.test(text)) {
    if (text.length > limit) throw new BodyTooLargeError(limit);
    // What a JSON parser gives (the usual case) is its own JSON text parsed again: used as
    // it is, with no second parse. Its canonical JSON, and so the fingerprint, is that of
    // the value read back from the text; canonical JSON never refuses it.
    if (isPlainJson(parsed, 0)) return { kind: 'json', value: parsed as JsonValue };
  }
  const encoded = new TextEncoder().encode(text);
  if (encoded.length > limit) throw new BodyTooLargeError(limit);
  return { kind: 'json', value: JSON.parse(text), bytes: encoded };
}

const NON_ASCII = /[^\0-\x7f]/;
/** Nesting past which {@link isPlainJson} says no (well below canonical JSON's limit of 256). */
const PLAIN_DEPTH = 64;

/**
 * Whether `value` is a tree that JSON text carries unchanged: null, booleans, strings,
 * finite numbers, dense arrays and plain objects of them (no `toJSON`, no `undefined`,
 * function or symbol member), at most {@link PLAIN_DEPTH} deep. For such a value
 * `JSON.parse(JSON.stringify(value))` has the same members in the same order with the same
 * values, so canonical JSON writes both alike. Called once the text is known to fit the
 * limit, which bounds the walk (shared subtrees included: each is written out in full).
 */
function isPlainJson(value: unknown, depth: number): boolean {
  if (value === null) return true;
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(value);
    case 'object':
      break;
    default:
      return false;
  }
  if (depth >= PLAIN_DEPTH) return false;
  const object = value as Record<string, unknown>;
  if (typeof object.toJSON === 'function') return false;
  if (Array.isArray(object)) {
    for (let i = 0; i < object.length; i++)
      if (!(i in object) || !isPlainJson(object[i], depth + 1)) return false;
    return true;
  }
  const proto = Object.getPrototypeOf(object);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const key in object) {
    // Inherited enumerable members (none on a plain object) are not written: say no.
    if (!Object.hasOwn(object, key) || !isPlainJson(object[key], depth + 1)) return false;
  }
  return true;
}
