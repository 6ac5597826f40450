import { IdemClientError } from './errors.js';
import { bufferOneShotBody, isAsyncIterable, isReadableStream } from './one-shot-body.js';

const encoder = new TextEncoder();

/** A body that can be handed to `fetch` again on every attempt. */
export type ReplayableBody =
  | string
  | URLSearchParams
  | ArrayBuffer
  | ArrayBufferView
  | Blob
  | FormData;

/** One logical request, normalised so that every attempt can be built from it. */
export interface PreparedRequest {
  url: string;
  method: string;
  headers: Headers;
  body: ReplayableBody | undefined;
  /** Set when `body` is a FormData encoded once here: its bytes carry a random boundary. */
  multipart?: true;
  /** The caller's signal: aborting it stops every attempt and every wait. */
  signal: AbortSignal | undefined;
  /** Remaining `RequestInit` fields, passed through to every attempt. */
  rest: RequestInit;
}

function isReplayable(body: unknown): body is ReplayableBody {
  return (
    typeof body === 'string' ||
    body instanceof URLSearchParams ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body) ||
    (typeof Blob !== 'undefined' && body instanceof Blob) ||
    (typeof FormData !== 'undefined' && body instanceof FormData)
  );
}

/** A copy of the bytes a view or buffer holds now. */
function snapshotBytes(body: ArrayBuffer | ArrayBufferView): Uint8Array {
  const view =
    body instanceof ArrayBuffer
      ? new Uint8Array(body)
      : new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  return view.slice();
}

/**
 * The body as it will be sent on every attempt. Mutable bodies are copied now, so a caller
 * that reuses its buffer or its `URLSearchParams` while the call retries cannot make two
 * attempts under one key carry two different bodies.
 */
async function replayableBody(
  body: unknown,
  limit: number,
  signal: AbortSignal | undefined,
): Promise<ReplayableBody | undefined> {
  if (body === undefined || body === null) return undefined;
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return snapshotBytes(body);
  if (body instanceof URLSearchParams) return new URLSearchParams(body);
  if (isReplayable(body)) return body;
  if (isReadableStream(body) || isAsyncIterable(body)) {
    return bufferOneShotBody(body, limit, signal);
  }
  // Anything else fetch would stringify; do it once so every attempt sends the same text.
  return String(body);
}

/**
 * Normalises fetch's arguments into a {@link PreparedRequest} whose body can be sent again.
 * A `Request` input is taken apart (its body read once); `init` wins over it, as in fetch.
 * `readSignal` stops the reading of a one-shot body (the caller's abort, the deadline).
 */
export async function prepareRequest(
  input: string | URL | Request,
  init: RequestInit | undefined,
  maxBufferedBodyBytes: number,
  readSignal?: AbortSignal,
): Promise<PreparedRequest> {
  const {
    method,
    headers,
    body,
    signal,
    duplex: _duplex,
    ...rest
  } = (init ?? {}) as RequestInit & {
    duplex?: string;
  };
  if (input instanceof Request) {
    const hasOwnBody = body !== undefined;
    if (!hasOwnBody && input.bodyUsed) {
      throw new IdemClientError(
        'BODY_NOT_REPLAYABLE',
        'The Request body was already read, so it cannot be sent; nothing was sent.',
      );
    }
    return fixMultipart({
      url: input.url,
      method: (method ?? input.method).toUpperCase(),
      headers: new Headers(headers ?? input.headers),
      body: await replayableBody(hasOwnBody ? body : input.body, maxBufferedBodyBytes, readSignal),
      signal: signal ?? input.signal ?? undefined,
      rest: {
        redirect: input.redirect,
        credentials: input.credentials,
        cache: input.cache,
        integrity: input.integrity,
        keepalive: input.keepalive,
        referrerPolicy: input.referrerPolicy,
        ...rest,
      },
    });
  }
  return fixMultipart({
    url: input instanceof URL ? input.href : String(input),
    method: (method ?? 'GET').toUpperCase(),
    headers: new Headers(headers),
    body: await replayableBody(body, maxBufferedBodyBytes, readSignal),
    signal: signal ?? undefined,
    rest,
  });
}

/**
 * `fetch` encodes a FormData body anew on every call, with a fresh random multipart
 * boundary: the bytes, and so the server's fingerprint, would differ on every attempt and
 * a retry would get 422 instead of the replay. Encode it once and send those bytes.
 */
async function fixMultipart(prepared: PreparedRequest): Promise<PreparedRequest> {
  if (typeof FormData === 'undefined' || !(prepared.body instanceof FormData)) return prepared;
  const encoded = new Response(prepared.body);
  const headers = new Headers(prepared.headers);
  const type = encoded.headers.get('content-type');
  if (type && !headers.has('content-type')) headers.set('content-type', type);
  return {
    ...prepared,
    headers,
    body: new Uint8Array(await encoded.arrayBuffer()),
    multipart: true,
  };
}

/** The body's bytes, for a key derived from content. */
export async function bodyBytes(request: PreparedRequest): Promise<Uint8Array> {
  const { body } = request;
  if (request.multipart || (typeof FormData !== 'undefined' && body instanceof FormData)) {
    throw new IdemClientError(
      'KEY_NOT_DERIVABLE',
      'A FormData body is encoded with a random boundary, so no key can be derived from its ' +
        'content; pass an Idempotency-Key header or use key: "random".',
    );
  }
  if (body === undefined) return new Uint8Array(0);
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof URLSearchParams) return encoder.encode(body.toString());
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body))
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  return new Uint8Array(await (body as Blob).arrayBuffer());
}

/**
 * Node's fetch (undici) refuses these request headers when it dispatches, after `new Request`
 * took them: every attempt would fail as a network error ("fetch failed") without being sent.
 */
const DISPATCH_REFUSED = new Set(['expect', 'transfer-encoding', 'keep-alive', 'upgrade']);

/** An HTTP token (RFC 9110 `tchar`s), as undici checks each `Connection` option. */
const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/**
 * Whether the running Node's fetch takes a `Connection` list of any options: undici 7.24.6
 * and later (Node 24) check each comma-separated option is a token (`keep-alive, close`,
 * `upgrade` are sent); earlier ones (Node 20's 6.x) take only `close` or `keep-alive`.
 * Unknown (no `process.versions.undici`): taken as the newer rule, as refusing a request that
 * fetch would send is worse than a retried one it refuses.
 */
const CONNECTION_LISTS_SENT = ((): boolean => {
  const version = (globalThis as { process?: { versions?: { undici?: unknown } } }).process
    ?.versions?.undici;
  const parts = typeof version === 'string' ? version.split('.').map(Number) : [];
  const [major = Number.NaN, minor = 0, patch = 0] = parts;
  if (!Number.isInteger(major)) return true;
  return major !== 7 ? major > 7 : minor > 24 || (minor === 24 && patch >= 6);
})();

/**
 * Whether the running Node's fetch takes only digits as a `Content-Length` value: undici 7
 * (Node 24: 7.30.2 seen) refuses `+3`, `3, 3` (two fields) or `0x3` ("invalid content-length
 * header"), with or without a body; undici 6 (Node 20: 6.24.1) reads it with `parseInt`, and
 * refuses only what that cannot read (`x`). Unknown: the older, laxer rule, as refusing a
 * request that fetch would send is worse than a retried one it refuses.
 */
const CONTENT_LENGTH_DIGITS_ONLY = ((): boolean => {
  const version = (globalThis as { process?: { versions?: { undici?: unknown } } }).process
    ?.versions?.undici;
  const major = typeof version === 'string' ? Number(version.split('.')[0]) : Number.NaN;
  return Number.isInteger(major) && major >= 7;
})();

/** The byte length fetch sends for `body`, where it is known before sending. */
function bodyLength(body: ReplayableBody | undefined): number | undefined {
  if (body === undefined) return undefined;
  if (typeof body === 'string') return encoder.encode(body).byteLength;
  if (body instanceof URLSearchParams) return encoder.encode(body.toString()).byteLength;
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return body.byteLength;
  if (typeof Blob !== 'undefined' && body instanceof Blob) return body.size;
  return undefined; // a FormData: fetch encodes it with a boundary of its own
}

/**
 * Refuses a `Content-Length` fetch can never send: one the running undici cannot read (see
 * CONTENT_LENGTH_DIGITS_ONLY), or one that differs from the body's length (both undici 6 and 7:
 * a longer one fails with UND_ERR_REQ_CONTENT_LENGTH_MISMATCH, a shorter one leaves the request
 * hanging until a time limit). Without a body fetch sends `0` whatever it says.
 */
function contentLengthRefused(headers: Headers, body: ReplayableBody | undefined): void {
  const value = headers.get('content-length');
  if (value === null) return;
  const declared = CONTENT_LENGTH_DIGITS_ONLY
    ? /^\d+$/.test(value)
      ? Number.parseInt(value, 10)
      : Number.NaN
    : Number.parseInt(value, 10);
  if (!Number.isFinite(declared))
    throw new TypeError(`fetch refuses the content-length request header (${value.slice(0, 64)})`);
  const length = bodyLength(body);
  if (length !== undefined && declared !== length)
    throw new TypeError(
      `the content-length request header (${value.slice(0, 64)}) does not match the body's ${length} bytes`,
    );
}

function connectionRefused(value: string): boolean {
  const options = value.split(',').map((option) => option.trim());
  if (options.some((option) => !HTTP_TOKEN.test(option))) return true;
  return !CONNECTION_LISTS_SENT && !/^(?:close|keep-alive)$/i.test(value);
}

function refusedHeader(headers: Headers): void {
  for (const [name, value] of headers) {
    const connection = name === 'connection' && connectionRefused(value);
    if (connection || DISPATCH_REFUSED.has(name)) {
      throw new TypeError(
        `fetch refuses the ${name} request header (${name}: ${value.slice(0, 64)})`,
      );
    }
  }
}

/**
 * Refuses, before anything is sent, a request that fetch could never send (it would throw the
 * same `TypeError` on every attempt, and each would be retried as a network error).
 */
export function checkSendable(request: PreparedRequest): void {
  try {
    if ((request.method === 'GET' || request.method === 'HEAD') && request.body !== undefined) {
      throw new TypeError(`A ${request.method} request cannot have a body`);
    }
    new Request(request.url, { method: request.method, headers: request.headers });
    refusedHeader(request.headers);
    contentLengthRefused(request.headers, request.body);
  } catch (error) {
    throw new IdemClientError(
      'INVALID_INPUT',
      `fetch cannot send this request (${(error as Error).message}); nothing was sent`,
      { cause: error },
    );
  }
}
