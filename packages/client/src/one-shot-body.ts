import { IdemClientError } from './errors.js';

const encoder = new TextEncoder();

export function isReadableStream(body: unknown): body is ReadableStream<unknown> {
  return typeof (body as ReadableStream | null)?.getReader === 'function';
}

export function isAsyncIterable(body: unknown): body is AsyncIterable<unknown> {
  return typeof (body as AsyncIterable<unknown> | null)?.[Symbol.asyncIterator] === 'function';
}

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

/** The chunks of a `ReadableStream` or an async iterable, with a way to stop the producer. */
function chunksOf(body: unknown): {
  next: () => Promise<IteratorResult<unknown>>;
  stop: () => void;
} {
  if (isReadableStream(body)) {
    const reader = body.getReader();
    return {
      next: () => reader.read() as Promise<IteratorResult<unknown>>,
      stop: () => void reader.cancel().catch(() => undefined),
    };
  }
  const iterator = (body as AsyncIterable<unknown>)[Symbol.asyncIterator]();
  return {
    next: () => iterator.next(),
    // return() closes a Node stream; it may throw or reject for a bare iterator.
    stop: () => {
      try {
        void Promise.resolve(iterator.return?.()).catch(() => undefined);
      } catch {
        // nothing more to stop
      }
    },
  };
}

/**
 * Reads a one-shot body (a `ReadableStream` or an async iterable such as a Node stream) into
 * memory, refusing it with `BODY_NOT_REPLAYABLE` once it passes `limit` bytes. When `signal`
 * aborts, the producer is stopped and the read rejects with the signal's reason at once, even
 * if the stream never yields again.
 */
export async function bufferOneShotBody(
  body: unknown,
  limit: number,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  signal?.throwIfAborted();
  const source = chunksOf(body);
  let aborted: (reason: unknown) => void = () => undefined;
  const abortion = new Promise<never>((_, reject) => {
    aborted = reject;
  });
  const onAbort = () => aborted(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const chunks: Uint8Array[] = [];
  let total = 0;
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await Promise.race([source.next(), abortion]);
      if (done) break;
      const bytes = chunkBytes(value);
      total += bytes.byteLength;
      if (total > limit) throw tooLarge(limit);
      // A copy: a producer may reuse the buffer it yielded.
      chunks.push(bytes.slice());
    }
    finished = true;
    return concat(chunks, total);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    if (!finished) source.stop();
  }
}
