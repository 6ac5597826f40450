import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { IdempotencyDecision } from './handler.js';
import { type PreparedResponse, preparedResponseOf } from './prepared-response.js';

export { checkTextLength, keptBytesBody, nodeRequestBody } from './node-request.js';
export type { RecordServerResponseOptions } from './node-response.js';
export { headersOf, recordServerResponse } from './node-response.js';
export { readyForOwnMethods } from './own-methods.js';
export { canonicalPath, targetPath } from './route-path.js';

/**
 * Writes a Web `Response` (a replay, a problem, or an attached live stream) to a Node
 * response, chunk by chunk, with backpressure: the next chunk is read only once the socket
 * took the last one, and the body is cancelled when the client goes away, so a client that
 * stops reading holds no more than the socket's buffers.
 */
export async function sendWebResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status;
  for (const [name, value] of response.headers) res.setHeader(name, value);
  if (response.body === null) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  const onClose = () => {
    if (!res.writableFinished) reader.cancel().catch(() => {});
  };
  res.once('close', onClose);
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      if (!res.write(read.value)) await drained(res);
      if (res.destroyed) return;
    }
    res.end();
  } catch (error) {
    res.destroy(error instanceof Error ? error : new Error(String(error)));
  } finally {
    res.off('close', onClose);
  }
}

function drained(res: ServerResponse): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
}

/**
 * Writes the answer of a `respond` decision (a replay, or one of the library's own errors)
 * to a Node response. One that @idem/http built is written as it is, chunk by chunk in the
 * same tick (a body of one chunk with `end`, so it goes out with its `Content-Length` in one
 * write), with no Web `Response` or stream in between; any other with {@link sendWebResponse}.
 */
export function sendDecisionResponse(
  res: ServerResponse,
  decision: Extract<IdempotencyDecision, { action: 'respond' }>,
): Promise<void> {
  const prepared = preparedResponseOf(decision);
  if (!prepared) return sendWebResponse(res, decision.response);
  sendPrepared(res, prepared);
  return Promise.resolve();
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
    }
  | undefined {
  const prepared = preparedResponseOf(decision);
  if (!prepared || prepared.chunks.length > 1) return undefined;
  const { status, reason, headers, chunks } = prepared;
  const [chunk] = chunks;
  if (chunk === undefined) return { status, reason, headers };
  return {
    status,
    reason,
    headers,
    body: Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength),
  };
}

function sendPrepared(
  res: ServerResponse,
  { status, reason, headers, chunks }: PreparedResponse,
): void {
  res.statusCode = status;
  // HTTP/2 has no reason phrase (node:http2 warns when one is set).
  if (reason !== undefined && !('createPushResponse' in res)) res.statusMessage = reason;
  for (const [name, value] of headers) res.setHeader(name, value);
  const last = chunks.length - 1;
  for (let i = 0; i < last; i++) res.write(chunks[i]);
  if (last < 0) res.end();
  else res.end(chunks[last]);
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
