import { IdemClientError } from './errors.js';

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

function isReadableStream(body: unknown): body is ReadableStream<unknown> {
  return typeof (body as ReadableStream | null)?.getReader === 'function';
}

function isAsyncIterable(body: unknown): body is AsyncIterable<unknown> {
  return typeof (body as AsyncIterable<unknown> | null)?.[Symbol.asyncIterator] === 'function';
}

const encoder = new TextEncoder();

function chunkBytes(chunk: unknown): Uint8Array {
  if (typeof chunk === 'string') return encoder.encode(chunk);
  if (chunk instanceof Uint8Array) return chunk;
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk))
    return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  throw new TypeError('A request body stream yielded a chunk that is not bytes or a string');
}

function tooLarge(limit: number): IdemClientError {
  return new IdemClientError(
    'BODY_NOT_REPLAYABLE',
    `The request body is a one-shot stream longer than maxBufferedBodyBytes (${limit} bytes); ` +
      'it cannot be resent on a retry, so nothing was sent. Pass the body as a string, bytes or ' +
      'a Blob, or raise maxBufferedBodyBytes.',
  );
}

function concat(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/**
 * Reads a one-shot body (a `ReadableStream` or an async iterable such as a Node stream) into
 * memory, refusing it with `BODY_NOT_REPLAYABLE` once it passes `limit` bytes.
 */
export async function bufferOneShotBody(body: unknown, limit: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (isReadableStream(body)) {
    const reader = body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const bytes = chunkBytes(value);
      total += bytes.byteLength;
      if (total > limit) {
        await reader.cancel().catch(() => undefined);
        throw tooLarge(limit);
      }
      chunks.push(bytes);
    }
    return concat(chunks, total);
  }
  for await (const chunk of body as AsyncIterable<unknown>) {
    const bytes = chunkBytes(chunk);
    total += bytes.byteLength;
    // Leaving the loop calls the iterator's return(), which closes a Node stream.
    if (total > limit) throw tooLarge(limit);
    chunks.push(bytes);
  }
  return concat(chunks, total);
}

async function replayableBody(body: unknown, limit: number): Promise<ReplayableBody | undefined> {
  if (body === undefined || body === null) return undefined;
  if (isReplayable(body)) return body;
  if (isReadableStream(body) || isAsyncIterable(body)) return bufferOneShotBody(body, limit);
  // Anything else fetch would stringify; do it once so every attempt sends the same text.
  return String(body);
}

/**
 * Normalises fetch's arguments into a {@link PreparedRequest} whose body can be sent again.
 * A `Request` input is taken apart (its body read once); `init` wins over it, as in fetch.
 */
export async function prepareRequest(
  input: string | URL | Request,
  init: RequestInit | undefined,
  maxBufferedBodyBytes: number,
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
      body: await replayableBody(hasOwnBody ? body : input.body, maxBufferedBodyBytes),
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
    body: await replayableBody(body, maxBufferedBodyBytes),
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
