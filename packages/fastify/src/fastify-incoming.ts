import { IncomingMessage } from 'node:http';
import {
  BodyTooLargeError,
  bodyFromBytes,
  bodyFromParsed,
  type IdempotencyHandler,
  type IncomingRequest,
  type RequestBody,
} from '@idem/http';
import { headerValue, requestUrl } from '@idem/http/node';
import type { FastifyRequest } from 'fastify';
import { BodyTap } from './body-tap.js';

/**
 * A Fastify request as the plugin hands it to `@idem/http`: made once per request (at
 * `onRequest` for a request with a body, else at `preHandler`), with the handler of its
 * route and the copy of its body.
 */
export class FastifyIncoming implements IncomingRequest<FastifyRequest> {
  readonly method: string;
  readonly url: string;
  /** The copy of the body (see {@link FastifyIncoming.copyBody}); `'over'`: declared past its limit. */
  private tap: BodyTap | 'over' | undefined = undefined;
  /**
   * Refused past its limit with the rest of its body left unread on the connection (a stream
   * held it back): the answer must close the connection, or the rest would be read as the
   * next request.
   */
  private closeAfter = false;
  /** Its declared length is past the limit: never copied (413). */
  private declaredOver = false;
  /** Its response finished (or its HTTP/2 stream closed) before the body was read. */
  private over = false;

  constructor(
    readonly native: FastifyRequest,
    readonly handler: IdempotencyHandler<FastifyRequest>,
    /** The route Fastify matched (its URL pattern). */
    readonly route: string,
    /** Longest wait at `preHandler` for the rest of a body (`bodyTimeoutMs`). */
    readonly bodyTimeoutMs: number,
    /** Under `wait`: `begin` is given {@link FastifyIncoming.signal}. */
    readonly waits = false,
  ) {
    this.method = native.method;
    this.url = requestUrl(native.url);
  }

  /** Aborted when its client leaves (set at `preHandler` under `wait`): ends a bounded wait. */
  signal?: AbortSignal;

  /** A function of its own: `@idem/http` may call it apart from the request. */
  readonly header = (name: string): string | undefined => headerValue(this.native.headers, name);

  /**
   * Starts copying the body when `begin` will read it, never past that limit
   * (`maxBodyBytes`, the one `begin` answers 413 past, whatever limit Fastify applies: a
   * content-type parser may have a higher one than the route): before anyone reads the
   * Node request.
   */
  copyBody(): void {
    const limit = this.handler.bodyLimit(this);
    if (limit === undefined) return;
    // A declared length past the limit is answered 413 (by Fastify or begin), never copied.
    if (Number(this.native.headers['content-length']) > limit) {
      this.tap = 'over';
      this.declaredOver = true;
    } else this.tap = BodyTap.start(this.native.raw, limit);
  }

  /**
   * Whether the answer must close the connection: the request was refused past its limit
   * (413) with the rest of its body left on the connection unread, held back by a stream
   * someone else reads (a `preParsing` hook's), which Node does not drain after the answer as
   * it drains a body nobody read (the rest would stall the connection, or be read as the
   * next request).
   */
  private leavesBodyUnread(): boolean {
    if (this.closeAfter) return true;
    const raw = this.native.raw;
    return (
      this.declaredOver &&
      !raw.readableEnded &&
      (raw.readableFlowing !== null ||
        raw.listenerCount('data') > 0 ||
        raw.listenerCount('readable') > 0)
    );
  }

  /**
   * What the answer to a request refused before its body was all in (413) leaves of the body:
   * `'unread'` (see {@link FastifyIncoming.leavesBodyUnread}: the connection must close),
   * `'draining'` (the rest is still coming in, read and dropped by the plugin or by Node, as
   * Node drains any body nobody read: the drain must be bounded in time), or nothing (the
   * body is all in).
   */
  restOfBody(): 'unread' | 'draining' | undefined {
    if (this.leavesBodyUnread()) return 'unread';
    return this.native.raw.readableEnded ? undefined : 'draining';
  }

  /**
   * At the response's end (`onResponse`): drops the copy. Before `begin` read the body, that
   * is a request that is over: answered (Fastify's 400, 413, 415, a hook's reply), or an
   * HTTP/2 stream that closed (a reset: Node's compatibility layer then says its response
   * finished, and Fastify may still parse a cut body and go on to `preHandler`). Its body is
   * never read after that (see {@link FastifyIncoming.readBody}).
   */
  finished(): void {
    this.over = true;
    this.release();
  }

  /**
   * Whether `begin` is still to read the body it will fingerprint: the copy is held (a keyed
   * request of a method that needs its key, neither read by `begin` nor over yet).
   */
  awaitsBegin(): boolean {
    return this.tap !== undefined;
  }

  /** Drops the copy and stops copying (after `begin`, or at the response for a request that never got there). */
  release(): void {
    const { tap } = this;
    if (tap === undefined) return;
    this.tap = undefined;
    if (tap !== 'over') tap.release();
  }

  /**
   * The body for the fingerprint: the bytes as sent (as `@idem/express` and `@idem/hono`
   * fingerprint it, whatever the content type), whole: the parser read it whole; or it left
   * the rest unread, and it is read here and put back for the route; or a stream a
   * `preParsing` hook pipes it into holds it back for the route, and the rest is waited for
   * as it comes in (see {@link BodyTap.whole}), for at most `bodyTimeoutMs`. Otherwise (no
   * copy: a body read before the copy started, or not made of bytes), Fastify's parsed body,
   * never a stream.
   * @throws BodyTooLargeError past `limit` bytes (as sent)
   * @throws BodyTimeoutError when the rest of the body does not come in within `bodyTimeoutMs`
   * @throws RequestOverError when the request was over before (see {@link FastifyIncoming.finished})
   * @throws Error when its client went away before the body was all in
   */
  readBody(limit: number): Promise<RequestBody> {
    // Not an async function: the usual body (all in by preHandler, Fastify's parser read it)
    // is answered without waiting a turn, and without an async frame of its own.
    try {
      if (this.over) throw new RequestOverError();
      const { tap } = this;
      if (!(tap instanceof BodyTap)) return Promise.resolve(this.bodyOf(tap, tap, limit));
      if (!tap.settled()) return this.awaitBody(tap, limit);
      let copy: Uint8Array | 'over' | undefined;
      try {
        copy = tap.take();
      } finally {
        this.release();
      }
      return Promise.resolve(this.bodyOf(tap, copy, limit));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** {@link FastifyIncoming.readBody} of a body whose rest is still coming in (or whose client went away). */
  private async awaitBody(tap: BodyTap, limit: number): Promise<RequestBody> {
    let copy: Uint8Array | 'over' | undefined;
    try {
      copy = await tap.whole(this.bodyTimeoutMs);
      if (tap.leftUnread) this.closeAfter = true;
    } finally {
      this.release();
    }
    return this.bodyOf(tap, copy, limit);
  }

  /**
   * The body for the fingerprint from the copy `tap` gave (`copy`: its bytes, `'over'`, or
   * none), else from how Node framed the request or Fastify's parsed body.
   */
  private bodyOf(
    tap: BodyTap | 'over' | undefined,
    copy: Uint8Array | 'over' | undefined,
    limit: number,
  ): RequestBody {
    // Its HTTP/2 stream closed while the plugin waited (the copy was dropped with it).
    if (this.over) throw new RequestOverError();
    const { native } = this;
    const contentType = headerValue(native.headers, 'content-type');
    if (copy === 'over') throw new BodyTooLargeError(limit);
    if (copy !== undefined) {
      if (copy.length > limit) throw new BodyTooLargeError(limit);
      return bodyFromBytes(copy, contentType);
    }
    // No body at all, as Node's server framed the request (its bytes are known: none),
    // whatever a parser made of it (a stream handed to the route, an empty value).
    if (tap === undefined && framedEmpty(native))
      return bodyFromBytes(new Uint8Array(0), contentType);
    const parsed: unknown = native.body;
    // A stream (handed to the route by a parser) is no body's value: its JSON would be its
    // internal state, which depends on how the bytes came in.
    if (isStream(parsed)) throw new UnreadBodyError();
    return bodyFromParsed(parsed, contentType, limit);
  }
}

/**
 * The body is a stream the route reads and the plugin could not copy what it carries: it
 * cannot be fingerprinted (Fastify answers 500; nothing ran or was stored).
 */
export class UnreadBodyError extends Error {
  override readonly name = 'UnreadBodyError';
  constructor() {
    super(
      'The request body is a stream the plugin could not copy as it came in: it cannot be fingerprinted',
    );
  }
}

/**
 * Whether the request has no body, by its framing as Node's server read it: an HTTP/1.x
 * request with neither Transfer-Encoding nor a Content-Length but 0 (RFC 9112, 6.3), an
 * HTTP/2 request whose HEADERS frame ended its stream, or that declares a Content-Length of 0
 * (which nghttp2 holds its DATA frames to). Never said of other requests (`app.inject`'s,
 * whose headers need not match what its payload carries).
 */
export function framedEmpty(request: FastifyRequest): boolean {
  const { headers } = request;
  if (headers['transfer-encoding'] !== undefined) return false;
  const length = headers['content-length'];
  const zero = length !== undefined && length.trim() !== '' && Number(length) === 0;
  const raw: unknown = request.raw;
  if (raw instanceof IncomingMessage) return length === undefined || zero;
  const stream = (raw as { stream?: { endAfterHeaders?: unknown } | null }).stream;
  if (typeof stream !== 'object' || stream === null) return false;
  return zero || stream.endAfterHeaders === true;
}

/**
 * The request was over (its HTTP/2 stream closed, its response finished) before the plugin
 * read its body: nothing runs (Fastify answers 500 to nobody; nothing was stored).
 */
export class RequestOverError extends Error {
  override readonly name = 'RequestOverError';
  constructor() {
    super('The request was over (its client gone, or answered) before its body was read');
  }
}

function isStream(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (typeof ReadableStream !== 'undefined' && value instanceof ReadableStream) return true;
  const maybe = value as { pipe?: unknown; on?: unknown };
  return typeof maybe.pipe === 'function' && typeof maybe.on === 'function';
}
