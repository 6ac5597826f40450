import type { IdempotencyOptions, JsonValue } from '@idem/core';
import type { LiveStreamOptions } from './live-options.js';
import type { ResponsePolicy } from './policy.js';

/**
 * What the app says about a request's scope. The storage key is derived from the
 * principal, the operation and the client's key, so the same key from two principals
 * never meets.
 */
export interface ScopeHint {
  /**
   * Tenant, user or API key id the request acts for. MUST identify the caller: `undefined`,
   * `null`, `''`, or an object or array with nothing but those in it (`{ tenant: undefined }`)
   * at request time is a configuration error (the request gets a 500 `no-principal` problem
   * and nothing runs), never a shared key space.
   */
  principal: Exclude<JsonValue, null>;
  /** Operation the key is unique within. @default `${METHOD} ${route or path}` */
  operation?: string;
}

/**
 * Names the scope of a request. Called after the key is validated and before anything is
 * read or stored; an error it throws propagates to the framework. Run it after your
 * authentication, so that it can read the authenticated caller.
 */
export type ScopeHook<R> = (request: R) => ScopeHint | Promise<ScopeHint>;

/** Which request parts make two requests "the same" (a retry) rather than a key reuse. */
export interface FingerprintOptions<R> {
  /** Request headers whose values matter (e.g. `content-type`, `x-api-version`). @default [] */
  headers?: readonly string[];
  /**
   * JSON body fields to leave out (top-level names or dotted paths). Not applied to a JSON
   * body fingerprinted by its bytes (a byte past ASCII under a charset other than UTF-8: see
   * `defaultCharset`). @default []
   */
  exclude?: readonly string[];
  /** Whether the query string is part of the fingerprint. @default true */
  query?: boolean;
  /** Further parts, from the native request. */
  extras?: (request: R) => Record<string, JsonValue> | Promise<Record<string, JsonValue>>;
  /**
   * The charset the text and form parsers after the middleware decode a body with when its
   * Content-Type names none (body-parser's `defaultCharset`, `express.text({ defaultCharset })`).
   * Set it when that is not UTF-8: a request whose Content-Type (a JSON type too: a text
   * parser told to parse every type decodes it so) names no charset, or an empty one, is
   * then fingerprinted as naming this one, so the same bytes
   * under `charset=utf-8`, which such a parser decodes otherwise, are another request (422),
   * never the first one's replay. Without it, no charset and UTF-8 are one request. Changing
   * it changes the fingerprints of requests naming no charset (their retries across the
   * change get 422). Under a charset other than UTF-8 (this one, or one a request names), a
   * JSON body with a byte past ASCII, or under a charset that does not read ASCII as UTF-8
   * does (UTF-16), is fingerprinted by its bytes, not as canonical JSON read as UTF-8: such a
   * parser reads `é` sent as UTF-8 bytes and as `\u00e9` apart. @default 'utf-8'
   */
  defaultCharset?: string;
}

/**
 * Options of {@link createIdempotencyHandler}. `R` is the request type the hooks receive:
 * the Web `Request` here, the framework's own request in the adapters. Every core option
 * (lease, heartbeat, retention, store timeout, bounded wait, clock, events) applies.
 */
export interface HttpIdempotencyOptions<R = Request>
  extends Omit<IdempotencyOptions<unknown>, 'isFinal' | 'serializer'> {
  /** Methods that are made idempotent; others pass through untouched. @default ['POST', 'PATCH'] */
  methods?: readonly string[];
  /** Whether a request of those methods without a key gets 400 (else it passes through). @default true */
  required?: boolean;
  /** Request header carrying the key. @default 'Idempotency-Key' */
  headerName?: string;
  /**
   * Required. Whose key space a request's key belongs to: a {@link ScopeHook} that returns
   * the request's principal (the same key from two principals never meets), or `'global'`
   * for a single-tenant server where every caller shares one key space on purpose.
   * Creating a handler without it throws `InvalidInputError`.
   */
  scope: ScopeHook<R> | 'global';
  /** Fingerprint parts beyond method, path and body. */
  fingerprint?: FingerprintOptions<R>;
  /**
   * Which responses are recorded and replayed. One that throws records the response (it never
   * costs a second run of the handler) and its error goes to `onWarning`. @default finalOn2xx
   */
  isFinal?: ResponsePolicy;
  /**
   * Response headers recorded and replayed (case-insensitive). Set-Cookie, hop-by-hop and
   * per-transfer headers are refused. @default DEFAULT_RECORDED_HEADERS
   */
  recordedHeaders?: readonly string[];
  /** Largest request body accepted, in bytes; larger ones get 413 before anything is stored. @default 1_048_576 */
  maxBodyBytes?: number;
  /**
   * When the store is down, run the handler without idempotency instead of answering 503,
   * and end a response normally even if its outcome could not be stored (instead of
   * aborting it). @default false
   */
  failOpen?: boolean;
  /**
   * `Retry-After` (seconds) of the 409 sent while a request with the key runs, capped by the
   * time left on its lease. The lease is renewed while the request runs, so it says little
   * about when the request ends: a short poll interval serves clients better. A finite,
   * non-negative number, rounded up to at least 1. @default 1
   */
  inProgressRetryAfterSeconds?: number;
  /** `Retry-After` (seconds) of the 503 sent when the store is down (finite, non-negative, rounded up to at least 1). @default 1 */
  unavailableRetryAfterSeconds?: number;
  /**
   * Receives configuration warnings (e.g. a scope hook that gave no principal), and the error
   * (its stack) of an `isFinal` that threw, whose response was recorded as final. What it throws
   * (or, async, rejects with) is ignored. @default console.warn
   */
  onWarning?: (message: string) => void;
  /**
   * Live streams. A duplicate (same key, fingerprint and scope) that arrives while the first
   * execution streams a final response of a published media type attaches to it: the
   * recorded head, every chunk so far, then the rest as it is produced, byte for byte, ending
   * only after the outcome is stored. It never runs the handler. A request with
   * `Idempotent-Attach: false`, a response of another type, or one not streaming yet keeps
   * the 409. `false` turns it off. @default on, with an in-process channel
   */
  liveStreams?: false | LiveStreamOptions;
}
