import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { IdempotencyDecision } from './handler.js';
import { UNHELD } from './node-response.js';
import { type PreparedResponse, preparedResponseOf } from './prepared-response.js';

export { leftUnanswered } from './head-source.js';
export { insideHeld, runHeld, whenEndedInside } from './held-context.js';
export { checkTextLength, keptBytesBody, keptJsonText, nodeRequestBody } from './node-request.js';
export type { RecordServerResponseOptions } from './node-response.js';
export { headersOf, recordServerResponse } from './node-response.js';
export { readyForOwnMethods } from './own-methods.js';
export { releaseTap, tappedInstead, tapRequestBodies } from './request-body-tap.js';
export { canonicalPath, targetPath } from './route-path.js';

/**
 * Removes the framing headers something else put on `res` before an answer is written there
 * (an Express middleware's `res.setHeader('Content-Length', ...)`, a hook's): the answer is
 * framed by its own body alone. A `Content-Length` left over would frame a body of another
 * length (a desync of the connection, or a client waiting for bytes that never come), and
 * beside the chunked framing of a streamed replay make both (RFC 9112 6.3). A
 * `Transfer-Encoding: chunked` is Node's own framing and stays over HTTP/1.1; any other coding
 * (`gzip`, `gzip, chunked`) is removed, and over HTTP/2, to an HTTP/1.0 client (see
 * {@link chunkedFraming}) or on a 204/304 any. Only a header that is there is removed: Node
 * frames nothing itself for a name removed once. True when a `Content-Length` was removed.
 */
function dropOthersFraming(res: ServerResponse): boolean {
  if (res.headersSent) return false;
  const coding = res.getHeader('transfer-encoding');
  // HTTP/2 has none at all: node:http2 throws at the head for one (a connection header).
  // A 204 or 304 has no body to frame: a server never sends one there (RFC 9112 6.1), and
  // Node closed the connection after such a head (a pipelined request behind it was lost).
  if (
    coding !== undefined &&
    ('createPushResponse' in res ||
      res.statusCode === 204 ||
      res.statusCode === 304 ||
      !chunkedFraming(res) ||
      !/^\s*chunked\s*$/i.test(String(coding)))
  ) {
    res.removeHeader('transfer-encoding');
    forgetRemovedCoding(res);
  }
  if (!res.hasHeader('content-length')) return false;
  res.removeHeader('content-length');
  return true;
}

/**
 * Whether Node may frame the body of `res` chunked: not to an HTTP/1.0 client (unless it sent
 * `TE: chunked`), which cannot read a chunked body (RFC 9112 6.1: a server never sends
 * `Transfer-Encoding` to one). There a `Transfer-Encoding: chunked` set by something else
 * made Node frame the answer chunked all the same: a client read the chunk sizes as part of
 * its body.
 */
export function chunkedFraming(res: ServerResponse): boolean {
  return (
    (res as ServerResponse & { useChunkedEncodingByDefault?: boolean })
      .useChunkedEncodingByDefault !== false
  );
}

/**
 * After a `Transfer-Encoding` removed from an HTTP/1.x response (`res.removeHeader`, or a
 * framework's that calls it): Node frames the body as if none had ever been set (its own
 * `Content-Length` for an `end(chunk)`, chunked for `write`s to an HTTP/1.1 client,
 * `Connection: close` for an HTTP/1.0 one). Node marks a removed `Transfer-Encoding`
 * (`_removedTE`) and then frames a written body by nothing at all, ending it with the
 * connection under a `Connection: keep-alive` head: a request pipelined behind it was never
 * answered, and a client was not told to read to the close. A Node without that mark (a
 * future one) gets `Connection: close`, which Node honours: a body ended by the connection's
 * close is then said to be. Nothing over HTTP/2 (no such framing there).
 */
export function forgetRemovedCoding(res: ServerResponse): void {
  if ('createPushResponse' in res || res.headersSent) return;
  const own = res as ServerResponse & { _removedTE?: unknown };
  if (typeof own._removedTE === 'boolean') own._removedTE = false;
  else res.setHeader('connection', 'close');
}

/**
 * Writes a Web `Response` (a replay, a problem, or an attached live stream) to a Node
 * response, chunk by chunk, with backpressure: the next chunk is read only once the socket
 * took the last one, and the body is cancelled when the client goes away, so a client that
 * stops reading holds no more than the socket's buffers.
 */
export async function sendWebResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status;
  dropOthersFraming(res);
  for (const [name, value] of response.headers) res.setHeader(name, value);
  if (response.body === null) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  // The response closed before its end (the client left, or it was destroyed): the body is
  // cancelled (an attached live reader frees its place at once). Whatever
  // `writableFinished` reads: node:http2's compat response reads true once its client reset
  // the stream.
  const onClose = () => {
    reader.cancel().catch(() => {});
  };
  res.once('close', onClose);
  let ended = false;
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      if (!res.write(read.value) && !(await drained(res))) return;
      if (takesNoMore(res)) return;
    }
    res.end();
    ended = true;
  } catch (error) {
    destroyBroken(res, error);
  } finally {
    res.off('close', onClose);
    // Stopped before the end (the response closed, or is closing): nothing reads the body on.
    if (!ended) reader.cancel().catch(() => {});
  }
}

/**
 * Destroys `res` whose body broke (with `error`, as an `Error`), for a framework that writes
 * a Web body itself (Fastify's `reply.send`): over HTTP/2 on the next turn. The body may have
 * broken in the same tick as another stream of the session was reset by its client (an
 * attached live reader whose first execution failed as its client left): a stream reset
 * then, while the session still handles that RST_STREAM, makes node:http2 loop in
 * `submitRstStream` forever, CPU and memory growing (seen on Node 20.20; nodejs/node#52952).
 */
export function destroyBroken(res: ServerResponse, error: unknown): void {
  const failure = error instanceof Error ? error : new Error(String(error));
  if ('createPushResponse' in res) setImmediate(() => res.destroy(failure));
  else res.destroy(failure);
}

/**
 * Whether `res` takes no more: destroyed, closed or ended, or, over HTTP/2, its stream closed
 * (node:http2's compat response has neither `destroyed` nor `closed`; after its client reset
 * the stream, `write` answers false and no 'drain' or 'close' comes any more).
 */
function takesNoMore(res: ServerResponse): boolean {
  if (res.destroyed || res.closed || res.writableEnded) return true;
  const stream = (res as ServerResponse & { stream?: { destroyed?: boolean; closed?: boolean } })
    .stream;
  return stream !== undefined && (stream.destroyed === true || stream.closed === true);
}

/**
 * The pending {@link clientLeftSignal}s of one connection. One `'close'` listener a connection
 * calls them all (and is removed once none is pending): a client may pipeline any number of
 * duplicates that wait on one connection (Node reads on while their queued responses write
 * nothing), and a listener each would grow the socket's list with them (past its limit of 10:
 * a `MaxListenersExceededWarning`).
 */
const leaving = new WeakMap<Socket, { listener: () => void; callbacks: Set<() => void> }>();

/** Calls `callback` once `socket` closes; the function returned stops that. */
function onConnectionClose(socket: Socket, callback: () => void): () => void {
  let entry = leaving.get(socket);
  if (entry === undefined) {
    const callbacks = new Set<() => void>();
    const listener = () => {
      socket.removeListener('close', listener);
      if (leaving.get(socket)?.listener === listener) leaving.delete(socket);
      for (const each of callbacks) each();
      callbacks.clear();
    };
    // The connection's `'close'` reaches it at once, also while the response of an earlier
    // request of the connection holds it back from listeners added later (see `heldEmit`,
    // which reads the mark on the listener itself: `on`, not `once`'s wrapper).
    (listener as (() => void) & { [UNHELD]?: true })[UNHELD] = true;
    socket.on('close', listener);
    entry = { listener, callbacks };
    leaving.set(socket, entry);
  }
  const { listener, callbacks } = entry;
  callbacks.add(callback);
  return () => {
    if (!callbacks.delete(callback) || callbacks.size > 0) return;
    socket.removeListener('close', listener);
    if (leaving.get(socket)?.listener === listener) leaving.delete(socket);
  };
}

/**
 * A signal for `begin`'s `signal`, aborted when the client of `res` is gone before anything
 * was written to it (it closed the connection, or reset its HTTP/2 stream), so that a bounded
 * `wait` for a duplicate ends at once instead of polling the store for nobody (`begin` then
 * rejects with the signal's reason: nothing to answer, nothing ran). HTTP/1.x: a response
 * queued behind an earlier one of its connection (a pipelined request) has no socket yet and
 * Node never closes it when the connection closes, and its request may have closed already
 * (its body read by a parser): the connection's own `close` counts too, which the hold of an
 * earlier response of the connection being recorded never keeps from it. `stop()` once `begin`
 * settled (one listener on the response until then; one on the connection for all of its
 * pending signals).
 */
export function clientLeftSignal(res: ServerResponse): { signal: AbortSignal; stop: () => void } {
  const controller = new AbortController();
  const socket = 'createPushResponse' in res ? undefined : res.req?.socket;
  const onClose = () => controller.abort(new Error('The client closed the connection'));
  if (takesNoMore(res) || socket?.destroyed) {
    onClose();
    return { signal: controller.signal, stop: () => {} };
  }
  res.once('close', onClose);
  const stopConnection = socket ? onConnectionClose(socket, onClose) : undefined;
  return {
    signal: controller.signal,
    stop: () => {
      res.off('close', onClose);
      stopConnection?.();
    },
  };
}

/** Resolves true once `res` drains, false when it closes first (the client left). */
function drained(res: ServerResponse): Promise<boolean> {
  // Gone already (the client left before or during the replay): its 'close' has been emitted
  // and no 'drain' will come.
  if (takesNoMore(res)) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    const drain = () => done(true);
    const close = () => done(false);
    const done = (open: boolean) => {
      res.off('drain', drain);
      res.off('close', close);
      resolve(open && !takesNoMore(res));
    };
    res.once('drain', drain);
    res.once('close', close);
  });
}

/**
 * Writes the answer of a `respond` decision (a replay, or one of the library's own errors)
 * to a Node response. One that @idem/http built is written as it is, with no Web `Response`
 * or stream in between: a body of one chunk with `end`, so it goes out with its
 * `Content-Length` in one write; a body of several chunks (a recorded stream) coalesced into
 * writes of up to 64 KiB, the next one only once the socket took the last (see
 * `sendPrepared`). Any other answer goes through {@link sendWebResponse}. The promise settles
 * once the body is handed to the socket, or the client has gone.
 */
export function sendDecisionResponse(
  res: ServerResponse,
  decision: Extract<IdempotencyDecision, { action: 'respond' }>,
): Promise<void> {
  return sendDecisionAtOnce(res, decision) ?? Promise.resolve();
}

/**
 * {@link sendDecisionResponse}, `undefined` when the body was handed to the socket before this
 * returned: no promise made for it (each costs more once promise hooks are on; the
 * twenty-sixth pass in benchmarks/HISTORY.md).
 * @internal for the adapters
 */
export function sendDecisionAtOnce(
  res: ServerResponse,
  decision: Extract<IdempotencyDecision, { action: 'respond' }>,
): Promise<void> | undefined {
  const prepared = preparedResponseOf(decision);
  if (!prepared) return sendWebResponse(res, decision.response);
  return sendPrepared(res, prepared);
}

/**
 * The status of a `respond` decision's answer, read without building its Web `Response`
 * (`decision.response` makes one, with a body stream, the first time it is read).
 */
export function decisionStatus(
  decision: Extract<IdempotencyDecision, { action: 'respond' }>,
): number {
  return preparedResponseOf(decision)?.status ?? decision.response.status;
}

/**
 * The answer of a `respond` decision that @idem/http built, whole: status, header pairs and
 * the body as one `Buffer` (undefined for none), for a framework that sends a payload itself
 * (Fastify's `reply.send`). Undefined for an answer it did not build, or one of several
 * chunks (a streamed response, replayed chunk by chunk): send `decision.response` then.
 */
export function wholeDecisionResponse(
  decision: Extract<IdempotencyDecision, { action: 'respond' }>,
):
  | {
      status: number;
      /** The reason phrase to send with the status, when not the status code's usual one. */
      reason?: string | undefined;
      headers: readonly (readonly [string, string])[];
      body?: Buffer;
      /** The recorded trailer fields, to send after the body (see {@link decisionTrailers}). */
      trailers?: readonly (readonly [string, string])[];
    }
  | undefined {
  const prepared = preparedResponseOf(decision);
  if (!prepared || prepared.chunks.length > 1) return undefined;
  const { status, reason, headers, chunks, trailers } = prepared;
  const [chunk] = chunks;
  const whole: NonNullable<ReturnType<typeof wholeDecisionResponse>> = { status, reason, headers };
  if (chunk !== undefined)
    whole.body = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (trailers !== undefined) whole.trailers = trailers;
  return whole;
}

/**
 * The trailer fields of a replay to send after its body (lowercase names, each once), for a
 * framework that sends the body itself (Fastify's `reply.trailer`): `decision.response`, a Web
 * `Response`, cannot carry them. Empty for an answer without trailers, or one @idem/http did
 * not build.
 */
export function decisionTrailers(
  decision: Extract<IdempotencyDecision, { action: 'respond' }>,
): readonly (readonly [string, string])[] {
  return preparedResponseOf(decision)?.trailers ?? [];
}

/**
 * The most bytes of a recorded stream's small chunks that a replay copies into one write.
 * A record of many small chunks (a token-by-token stream) would otherwise go out one write a
 * chunk, each with its own chunked framing and queued entry: a 1 MB record of 1-byte chunks
 * queued ~6 MB on the socket and ~0.4 GB of heap for a client that did not read.
 */
const REPLAY_WRITE_BYTES = 64 * 1024;

/**
 * Writes a prepared answer. No body, or one chunk: in this tick, with `end` (the hot path:
 * no promise, no copy). Several chunks: `write`s of up to {@link REPLAY_WRITE_BYTES} (small
 * chunks copied together, a larger one as it is), then `end` without data, so the head is
 * the first execution's (chunked, no `Content-Length` added). While the socket takes them it
 * stays in this tick; once it asks to wait, the next write waits for 'drain' (a promise,
 * returned), and stops when the response closes first (the client left): a replay to a client
 * that does not read holds what the first execution held, not the whole body queued.
 */
function sendPrepared(
  res: ServerResponse,
  { status, reason, headers, chunks, trailers }: PreparedResponse,
): Promise<void> | undefined {
  res.statusCode = status;
  const dropped = dropOthersFraming(res);
  const http2 = 'createPushResponse' in res;
  // HTTP/2 has no reason phrase (node:http2 warns when one is set).
  if (reason !== undefined && !http2) res.statusMessage = reason;
  for (const [name, value] of headers) res.setHeader(name, value);
  if (trailers !== undefined && trailers.length > 0 && carriesTrailers(res, http2)) {
    // Named in a `Trailer` header, which makes Node frame the body chunked (no
    // `Content-Length`, even for an `end(chunk)`), and sent with the end.
    res.setHeader('trailer', trailers.map(([name]) => name).join(', '));
    // An object: node:http2's compat response reads no array of pairs (names come once).
    res.addTrailers(Object.fromEntries(trailers));
  }
  if (chunks.length > 1) return writeChunks(res, chunks, 0);
  // Node adds no `Content-Length` once one was removed: the answer's own, as Node would.
  // (Never on a 204 or 304, which carry none.)
  if (
    dropped &&
    status !== 204 &&
    status !== 304 &&
    !res.hasHeader('transfer-encoding') &&
    !res.hasHeader('trailer')
  )
    res.setHeader('content-length', chunks[0]?.byteLength ?? 0);
  if (chunks.length === 0) res.end();
  else res.end(chunks[0]);
  return undefined;
}

/**
 * Whether `res` can send trailers: not to a HEAD request (no body, no trailer section), and
 * over HTTP/1.x only with chunked framing, which Node does not use for an HTTP/1.0 client
 * (unless it sent `TE: chunked`): Node refuses a `Trailer` header then, and the replay goes
 * without its trailers, framed as it was before trailers were recorded.
 */
function carriesTrailers(res: ServerResponse, http2: boolean): boolean {
  if (http2) return (res as ServerResponse & { req?: { method?: string } }).req?.method !== 'HEAD';
  const own = res as ServerResponse & { _hasBody?: boolean; useChunkedEncodingByDefault?: boolean };
  return own._hasBody !== false && own.useChunkedEncodingByDefault !== false;
}

/** Writes `chunks` from `from` on, coalesced, with backpressure, then ends `res`. */
function writeChunks(
  res: ServerResponse,
  chunks: readonly Uint8Array[],
  from: number,
): Promise<void> | undefined {
  let next = from;
  while (next < chunks.length) {
    const start = next;
    let size = (chunks[next++] as Uint8Array).byteLength;
    while (next < chunks.length) {
      const length = (chunks[next] as Uint8Array).byteLength;
      if (size + length > REPLAY_WRITE_BYTES) break;
      size += length;
      next++;
    }
    const piece =
      next - start === 1
        ? (chunks[start] as Uint8Array)
        : Buffer.concat(chunks.slice(start, next) as Uint8Array[], size);
    if (!res.write(piece)) {
      const resume = next;
      return drained(res).then((open) => {
        if (open) return writeChunks(res, chunks, resume);
      });
    }
  }
  res.end();
  return undefined;
}

/** One header of a Node request as a single string (repeated fields joined by ", "). */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * A Node request's target (`req.url`: path and query as sent) as an absolute URL, for
 * `IncomingRequest.url`. Read relative to a base, a target that starts with `//` would
 * name a host (`//a/payouts` is path `/payouts` on host `a`): a prefix keeps it a path.
 */
export function requestUrl(target: string): string {
  return target.startsWith('/') ? `http://localhost${target}` : target;
}
