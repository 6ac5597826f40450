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

  constructor(
    readonly native: FastifyRequest,
    readonly handler: IdempotencyHandler<FastifyRequest>,
    /** The route Fastify matched (its URL pattern). */
    readonly route: string,
  ) {
    this.method = native.method;
    this.url = requestUrl(native.url);
  }

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
    if (Number(this.native.headers['content-length']) > limit) this.tap = 'over';
    else this.tap = BodyTap.start(this.native.raw, limit);
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
   * fingerprint it, whatever the content type) when the copy is whole: the parser read it
   * whole, or it left the rest unread and it is read here and put back for the route (see
   * {@link BodyTap.pull}). Otherwise, as before the copy, Fastify's parsed body: a body
   * read before the copy started, or that someone else was reading at `preHandler` (a
   * stream a `preParsing` hook still pipes).
   * @throws BodyTooLargeError past `limit` bytes (as sent)
   */
  async readBody(limit: number): Promise<RequestBody> {
    const { tap, native } = this;
    const contentType = headerValue(native.headers, 'content-type');
    let copy: Uint8Array | 'over' | undefined = tap === 'over' ? tap : undefined;
    if (tap instanceof BodyTap) {
      try {
        copy = tap.take() ?? (await tap.pull());
      } finally {
        this.release();
      }
    }
    if (copy === 'over') throw new BodyTooLargeError(limit);
    if (copy !== undefined) {
      if (copy.length > limit) throw new BodyTooLargeError(limit);
      return bodyFromBytes(copy, contentType);
    }
    return bodyFromParsed(native.body, contentType, limit);
  }
}
