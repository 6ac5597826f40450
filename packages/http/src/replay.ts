import { OutcomeCorruptError, type StoredOutcome } from '@idem/core';
import { type PreparedResponse, webResponse } from './prepared-response.js';
import {
  CORS_RESPONSE_HEADERS,
  isLowercaseFieldName,
  isNeverRecorded,
  isRecordableTrailer,
  varyWith,
} from './recorded-headers.js';
import { OUTCOME_FORMAT } from './recorder.js';

/** Header that marks a replayed response. */
export const REPLAYED_HEADER = 'idempotent-replayed';

const NULL_BODY_STATUS = new Set([101, 103, 204, 205, 304]);

interface HttpOutcomeMeta {
  status: number;
  /** The status line's reason phrase, when it was not the status code's usual one. */
  reason?: string;
  headers: [string, string][];
  chunks: number[];
  /** The recorded trailer fields (lowercase names, each once); absent when there were none. */
  trailers?: [string, string][];
  /**
   * The response's CORS fields and the request `Origin` (null: none) they were computed
   * for; absent when it had none.
   */
  cors?: { origin: string | null; headers: [string, string][] };
}

/** A reason phrase as HTTP/1.1 and a Web `Response` take it (RFC 9112, 4), at most 1,024 characters. */
const REASON_PHRASE = /^[\t\x20-\x7e\x80-\xff]{1,1024}$/;

/** A stored header name the recorder never writes, other than the replay marker it overrides. */
function forgedHeader(name: string): boolean {
  const lower = name.toLowerCase();
  return lower !== REPLAYED_HEADER && isNeverRecorded(lower);
}

function readMeta(outcome: StoredOutcome): HttpOutcomeMeta {
  const { meta } = outcome;
  // Fields other than these are ignored (a record of a later version replays without them).
  const { status, reason, headers, chunks, trailers, cors } = meta as Partial<HttpOutcomeMeta>;
  const valid =
    meta.format === OUTCOME_FORMAT &&
    (reason === undefined || (typeof reason === 'string' && REASON_PHRASE.test(reason))) &&
    typeof status === 'number' &&
    Number.isInteger(status) &&
    status >= 200 &&
    status <= 599 &&
    Array.isArray(headers) &&
    headers.every(
      (h) =>
        Array.isArray(h) &&
        h.length === 2 &&
        h.every((v) => typeof v === 'string') &&
        // Never recorded (Set-Cookie, framing, hop-by-hop): a stored one was not written here.
        // The replay marker is the exception: the replay sets its own over it, as it always did.
        !forgedHeader(h[0]),
    ) &&
    Array.isArray(chunks) &&
    chunks.every((n) => Number.isSafeInteger(n) && n > 0) &&
    chunks.reduce((a, b) => a + b, 0) === outcome.body.length &&
    (trailers === undefined ||
      (Array.isArray(trailers) &&
        trailers.every(
          (t) =>
            Array.isArray(t) &&
            t.length === 2 &&
            typeof t[0] === 'string' &&
            typeof t[1] === 'string' &&
            isLowercaseFieldName(t[0]) &&
            TRAILER_VALUE.test(t[1]) &&
            // Never a field the recorder leaves out (Set-Cookie, framing, connection-specific
            // fields HTTP/2 refuses), and each name once, as recorded.
            isRecordableTrailer(t[0]),
        ) &&
        new Set(trailers.map((t) => t[0])).size === trailers.length)) &&
    (cors === undefined || validCors(cors));
  if (!valid)
    throw new OutcomeCorruptError(
      'The stored outcome is not an HTTP response recorded by @idem/http',
    );
  return {
    status: status as number,
    reason,
    headers: headers as [string, string][],
    chunks: chunks as number[],
    trailers,
    cors,
  };
}

/** Recorded CORS fields as the recorder writes them: only those names, values Node sends. */
function validCors(cors: unknown): boolean {
  if (typeof cors !== 'object' || cors === null) return false;
  const { origin, headers } = cors as Partial<NonNullable<HttpOutcomeMeta['cors']>>;
  return (
    (origin === null || typeof origin === 'string') &&
    Array.isArray(headers) &&
    headers.every(
      (h) =>
        Array.isArray(h) &&
        h.length === 2 &&
        typeof h[1] === 'string' &&
        CORS_RESPONSE_HEADERS.has(h[0]) &&
        TRAILER_VALUE.test(h[1]),
    )
  );
}

/**
 * `headers` (sorted, as a `Headers` iterates them) with the recorded CORS fields added when
 * the request comes from the `Origin` they were computed for (null: no `Origin`), never over a
 * recorded field of the same name; `Vary: Origin` either way (the replay depends on it).
 */
function withCors(
  headers: [string, string][],
  cors: NonNullable<HttpOutcomeMeta['cors']>,
  origin: string | null,
): [string, string][] {
  const out = headers.filter(([name]) => name !== 'vary');
  const vary = headers.find(([name]) => name === 'vary')?.[1];
  out.push(['vary', varyWith(vary, 'origin')]);
  if (cors.origin === origin)
    for (const pair of cors.headers)
      if (!headers.some(([name]) => name === pair[0])) out.push([pair[0], pair[1]]);
  return out.sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/** A recorded trailer field's value: one Node sends as it is. */
const TRAILER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

// RFC 9110 token characters, lowercase letters only (as a `Headers` iterates names).
const NAME_CHARS = new Uint8Array(128);
for (const ch of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
  NAME_CHARS[ch.charCodeAt(0)] = 1;

/**
 * Whether a `Headers` would keep the pair as it is: a lowercase token name, and a value of
 * visible ASCII (inner spaces allowed) with nothing to trim. Anything else takes the way
 * through `Headers`, which normalizes (or refuses) it as it always did. A loop, not a
 * regular expression: this runs for every header of every replay.
 */
function isPlainPair(name: string, value: string): boolean {
  if (name.length === 0) return false;
  for (let i = 0; i < name.length; i++) {
    const code = name.charCodeAt(i);
    if (code >= 128 || NAME_CHARS[code] === 0) return false;
  }
  const last = value.length - 1;
  for (let i = 0; i <= last; i++) {
    const code = value.charCodeAt(i);
    if (code > 0x7e || code < 0x20 || (code === 0x20 && (i === 0 || i === last))) return false;
  }
  return true;
}

/**
 * The recorded headers plus `Idempotent-Replayed: true`, as a `Headers` would iterate them:
 * lowercase names, each once, sorted. Recorded pairs come in that form (they were read
 * from a `Headers`): they are checked and kept, not rebuilt.
 * @internal
 */
export function replayedHeaders(recorded: readonly [string, string][]): [string, string][] {
  const out: [string, string][] = [];
  let previous = '';
  let marked = false;
  for (const pair of recorded) {
    const [name, value] = pair;
    if (!(name > previous && isPlainPair(name, value))) return normalized(recorded);
    if (!marked && name >= REPLAYED_HEADER) {
      out.push([REPLAYED_HEADER, 'true']);
      marked = true;
    }
    // A recorded marker (never recorded by @idem/http) is replaced, as `Headers.set` did.
    if (name !== REPLAYED_HEADER) out.push(pair);
    previous = name;
  }
  if (!marked) out.push([REPLAYED_HEADER, 'true']);
  return out;
}

function normalized(recorded: readonly [string, string][]): [string, string][] {
  const headers = new Headers(recorded as [string, string][]);
  headers.set(REPLAYED_HEADER, 'true');
  return [...headers];
}

/**
 * The recorded response, prepared: the same status, the recorded headers plus
 * `Idempotent-Replayed: true`, and the same body bytes in the same chunks, in the same order.
 * With `origin` (the replay's request `Origin`, null for none), the CORS fields recorded for
 * that same `Origin` too (see {@link withCors}); without it, none.
 * @throws OutcomeCorruptError when the outcome was not recorded by @idem/http
 * @internal
 */
export function prepareReplay(outcome: StoredOutcome, origin?: string | null): PreparedResponse {
  const meta = readMeta(outcome);
  const recorded = replayedHeaders(meta.headers);
  const headers =
    meta.cors && origin !== undefined ? withCors(recorded, meta.cors, origin) : recorded;
  const { status, reason } = meta;
  // A response without a body has no trailer section either.
  if (NULL_BODY_STATUS.has(status)) return { status, reason, headers, chunks: [] };
  const body = outcome.body;
  let chunks: Uint8Array[];
  if (meta.chunks.length <= 1) chunks = meta.chunks.length === 0 ? [] : [body];
  else {
    chunks = [];
    let offset = 0;
    for (const length of meta.chunks) {
      chunks.push(body.subarray(offset, offset + length));
      offset += length;
    }
  }
  // Only when there are some: a replay without trailers keeps the shape it always had.
  return meta.trailers?.length
    ? { status, reason, headers, chunks, trailers: meta.trailers }
    : { status, reason, headers, chunks };
}

/**
 * Rebuilds the recorded response: the same status (and reason phrase, as `statusText`), the recorded headers plus
 * `Idempotent-Replayed: true`, and the same body bytes, as a stream of the same chunks in
 * the same order (one chunk as bytes). A Web `Response` has no trailers: recorded trailer
 * fields are not in it (the Node adapters send them, see `sendDecisionResponse`).
 * @throws OutcomeCorruptError when the outcome was not recorded by @idem/http
 */
export function replayResponse(outcome: StoredOutcome): Response {
  return webResponse(prepareReplay(outcome));
}
