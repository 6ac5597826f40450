import type { JsonValue } from '@idem/core';
import { AMBIGUOUS, canonicalJsonText } from './canonical-text.js';
import { contentTypeParameters } from './content-type.js';
import { brandError, isBranded } from './error-brand.js';
import { isAmbiguousJson } from './json-ambiguity.js';
import { jsonTextOf } from './json-text.js';
import { trimOws } from './media-type.js';
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
  /** Also an instance of this class made by the other entry point's copy (see `brandError`). */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: the class `instanceof` is asked about (a subclass too)
    return isBranded(this, BodyTooLargeError, 'BodyTooLargeError', value);
  }

  constructor(readonly limit: number) {
    super(`The request body is larger than ${limit} bytes`);
    this.name = 'BodyTooLargeError';
    brandError(this, 'BodyTooLargeError');
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
  /** Also an instance of this class made by the other entry point's copy (see `brandError`). */
  static override [Symbol.hasInstance](value: unknown): boolean {
    // biome-ignore lint/complexity/noThisInStatic: the class `instanceof` is asked about (a subclass too)
    return isBranded(this, BodyAlreadyReadError, 'BodyAlreadyReadError', value);
  }

  constructor(
    message = 'The request body was read before the idempotency middleware, which can no longer fingerprint it: mount the middleware before the code that reads the body, or have that code keep the bytes as req.rawBody (a Buffer or string) or the parsed body as req.body',
  ) {
    super(message);
    this.name = 'BodyAlreadyReadError';
    brandError(this, 'BodyAlreadyReadError');
  }
}

/**
 * A body a parser before the middleware decoded as text (a text parser, a JSON parser's
 * strings, a form parser) in a way that may have lost bytes, so that different bodies decode
 * alike and would be replayed one for the other:
 * - text holding U+FFFD: UTF-8 decoding puts one for every invalid byte sequence;
 * - text holding a lone surrogate: UTF-16 decoding keeps one as it is, and its UTF-8
 *   encoding (what is fingerprinted) is U+FFFD's;
 * - a body whose Content-Type names a charset other than UTF-8 (UTF-16 decoding drops an odd
 *   trailing byte, other decoders map bytes they do not know to one character);
 * - an object parsed from a body whose Content-Type is not JSON (see {@link parsedObjectError}).
 * Refused as a body that can no longer be seen (500, nothing runs, no key is taken) unless
 * a reader kept the bytes as `req.rawBody` (a Buffer). A valid body that holds U+FFFD itself
 * is refused too: after the parser, nothing tells it from a decoded invalid one.
 * @internal
 */
export function decodedBodyError(why: string): BodyAlreadyReadError {
  return new BodyAlreadyReadError(
    `The request body was decoded before the idempotency middleware and ${why}, so different bodies may decode alike: mount the middleware before the body parser, or keep the bytes as req.rawBody (a Buffer; NestJS: rawBody: true)`,
  );
}

const FFFD = 'holds U+FFFD, which UTF-8 decoding puts for every invalid byte sequence';
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * The charset a Content-Type names, lower-cased, or undefined when it names none; its
 * parameters read per RFC 9110 5.6.6 (a `charset=` inside another parameter's quoted value
 * is not the charset). A parameter list that does not parse, or names the charset twice,
 * is refused: parsers differ on what they decode it as.
 */
function charsetOf(contentType: string | null | undefined): string | undefined {
  if (!contentType) return undefined;
  // The parsers before the middleware (body-parser's content-type) take `charset = utf-8`.
  const params = contentTypeParameters(contentType, { spacesAroundEquals: true });
  if (!params) throw decodedBodyError('has Content-Type parameters that do not parse');
  const charsets = params.get('charset');
  if (charsets && charsets.length > 1)
    throw decodedBodyError('has a Content-Type that names more than one charset');
  return charsets?.[0]?.toLowerCase();
}

/** Throws when the Content-Type names a charset other than UTF-8 (see {@link decodedBodyError}). */
function checkCharset(contentType: string | null | undefined): void {
  const charset = charsetOf(contentType);
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8')
    throw decodedBodyError(`was decoded as ${charset}, which may drop or merge bytes`);
}

/**
 * Refusal of a body a parser before the middleware made into an object (names and values)
 * although its Content-Type is not JSON: a form (`application/x-www-form-urlencoded`,
 * `multipart/form-data`), or any type a parser was told to parse (a `type` option matching every type, Koa's
 * `extendTypes`). Such parsers lose what tells different bodies apart, and nothing in the
 * parsed object shows it: qs (express.urlencoded, @koa/bodyparser) and fast-querystring leave
 * an escape they cannot decode as it is (`%FF` and `%25FF` both give "%FF"); qs drops a pair
 * with an empty name (`=1`), the text after a closing bracket (`a[b]x=1`), array indexes
 * (`a[7]=x` is `a[0]=x`), a `utf8=` pair with `charsetSentinel`; under @koa/bodyparser also
 * every pair past 1,000, pairs named as `Object.prototype` members (`toString`,
 * `constructor`, at any depth), and `a.b` becomes `a[b]`. Only the bytes tell such bodies
 * apart: a reader that keeps them (`req.rawBody`, a Buffer) has them fingerprinted instead.
 */
function parsedObjectError(): BodyAlreadyReadError {
  return decodedBodyError(
    'was parsed into names and values under a Content-Type that is not JSON (a form, or a type a parser was told to parse), which lose what tells different bodies apart (an invalid escape and %25, a dropped or merged pair, an array index)',
  );
}

/** Throws when decoded `text` holds what a lossy decoding leaves (see {@link decodedBodyError}). */
function checkText(text: string): void {
  if (text.includes('\uFFFD')) throw decodedBodyError(FFFD);
  if (LONE_SURROGATE.test(text)) throw decodedBodyError('holds a lone surrogate');
}

// Stateless between calls (no `stream` option): one for every body.
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

// OWS only (not `\s`, not String#trim: U+00A0 is no whitespace to type-is; see `mediaType`).
const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json[ \t]*(?:;|$)/i;

/** True for `application/json` and `application/*+json` content types. */
export function isJsonContentType(contentType: string | null | undefined): boolean {
  return typeof contentType === 'string' && JSON_TYPE.test(trimOws(contentType));
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
  return concatBytes(parts, size);
}

/** `parts` in one array of `size` bytes (their total). @internal */
export function concatBytes(parts: readonly Uint8Array[], size: number): Uint8Array {
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
      // such a body is fingerprinted by its bytes. The same pass over the text writes the
      // canonical JSON of the value for the fingerprint.
      const canonical = canonicalJsonText(text);
      if (canonical !== undefined) {
        if (canonical !== AMBIGUOUS) return new TextJsonBody(value, bytes, canonical);
      } else if (!isAmbiguousJson(text)) return { kind: 'json', value, bytes };
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
 * A JSON body read from its bytes by {@link bodyFromBytes}, which also wrote the canonical
 * JSON of its value from its text (in the same pass as the ambiguity check): the fingerprint
 * takes it as it is instead of writing it again from the value.
 *
 * The text is the value's only while nobody can have changed the value: `value` is an own
 * accessor, and the first read of it (or a write) drops the text, so that an adapter or a
 * hook that changes the value in place (`delete body.value.sentAt`) has its change
 * fingerprinted, as from any other value. Taking the text ({@link TextJsonBody.canonical})
 * drops it too: a 600 KB body does not keep 1.2 MB of canonical JSON for its whole life.
 * @internal
 */
export class TextJsonBody {
  readonly kind = 'json';
  declare value: JsonValue;
  #value: JsonValue;
  #canonical: string | undefined;
  constructor(
    value: JsonValue,
    public bytes: Uint8Array,
    canonical: string,
  ) {
    this.#value = value;
    this.#canonical = canonical;
    // Own and enumerable, as a plain body's member: `{ ...body }` and equality see it.
    Object.defineProperty(this, 'value', TextJsonBody.#VALUE);
  }
  /**
   * `canonicalJson(value)`, once: undefined once `value` was read or replaced, or the text
   * taken before (then the value's canonical JSON is written from the value, as for any body).
   */
  canonical(): string | undefined {
    const canonical = this.#canonical;
    this.#canonical = undefined;
    return canonical;
  }
  /** One accessor for every body: reading or writing `value` drops the text. */
  static readonly #VALUE: PropertyDescriptor = {
    enumerable: true,
    configurable: true,
    get(this: TextJsonBody): JsonValue {
      this.#canonical = undefined;
      return this.#value;
    },
    set(this: TextJsonBody, value: JsonValue) {
      this.#canonical = undefined;
      this.#value = value;
    },
  };
}

/**
 * Interprets a body a framework already parsed: bytes and strings as sent, `undefined` or
 * `null` as none, an object parsed from a JSON content type (`application/json`,
 * `application/*+json`) as the JSON value it was parsed from (measured by its JSON text
 * against `limit`). An object parsed from any other content type (a form) is refused (see
 * {@link parsedObjectError}): the caller fingerprints the bytes instead when a reader kept them.
 * @throws BodyTooLargeError past `limit` bytes
 * @throws BodyAlreadyReadError when it was decoded in a way that may have lost bytes (see
 * {@link decodedBodyError}), or is an object that has no JSON text (a cycle)
 */
export function bodyFromParsed(
  parsed: unknown,
  contentType: string | null | undefined,
  limit: number,
): RequestBody {
  return parsedBody(parsed, contentType, limit, false);
}

/**
 * {@link bodyFromParsed}; with `anyObject`, an object parsed under a Content-Type that is not
 * JSON is taken as its JSON value too (for a request that declares no body: a parser's `{}`).
 * @internal
 */
export function parsedBody(
  parsed: unknown,
  contentType: string | null | undefined,
  limit: number,
  anyObject: boolean,
): RequestBody {
  if (parsed === undefined || parsed === null) return { kind: 'none' };
  if (!(parsed instanceof Uint8Array)) {
    checkCharset(contentType);
    if (typeof parsed === 'string') checkText(parsed);
  }
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
  // Decided by what was parsed (an object) and not only by a form Content-Type: a parser told
  // to parse forms under any type (a `type` option matching all) gives the same lossy objects.
  if (!anyObject && typeof parsed === 'object' && !isJsonContentType(contentType))
    throw parsedObjectError();
  // Iterative past JSON.stringify's depth; its length bounds the text (a deep cycle included).
  let text: string | undefined;
  try {
    text = jsonTextOf(parsed, limit);
  } catch (error) {
    // JSON.stringify's TypeError for a shallow cycle (or a BigInt) a custom parser made.
    if (!(error instanceof TypeError)) throw error;
    throw new BodyAlreadyReadError(
      `The request body was parsed before the idempotency middleware into a value that has no JSON text (${error.message.split('\n')[0]}), so it cannot be fingerprinted: mount the middleware before the body parser, or keep the bytes as req.rawBody (a Buffer; NestJS: rawBody: true)`,
    );
  }
  if (text === undefined) throw new BodyTooLargeError(limit);
  if (!NON_ASCII.test(text)) {
    if (text.length > limit) throw new BodyTooLargeError(limit);
    // What a JSON parser gives (the usual case) is its own JSON text parsed again: used as
    // it is, with no second parse. Its canonical JSON, and so the fingerprint, is that of
    // the value read back from the text; canonical JSON never refuses it.
    if (isPlainJson(parsed, 0)) return { kind: 'json', value: parsed as JsonValue };
  }
  // JSON.stringify writes U+FFFD as it is, in a string or a member name (a lone surrogate as
  // an escape).
  checkText(text);
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
