import {
  BodyTooLargeError,
  bodyFromBytes,
  bodyFromParsed,
  type IdempotencyHandler,
  type IncomingRequest,
  isJsonContentType,
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
  private tap: BodyTap | undefined = undefined;
  /** What the copy gave when it stopped (see {@link BodyTap.take}). */
  private taken: Uint8Array | 'over' | undefined = undefined;

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
   * Starts copying the body when `begin` will read it, never past its limit nor `bodyLimit`
   * (Fastify's for the route): before anyone reads the Node request.
   */
  copyBody(bodyLimit: number): void {
    const limit = this.handler.bodyLimit(this);
    if (limit === undefined) return;
    const cap = Math.min(limit, bodyLimit);
    // A declared length past the cap is answered 413 (by Fastify or begin) unread.
    if (Number(this.native.headers['content-length']) > cap) return;
    this.tap = BodyTap.start(this.native.raw, cap);
  }

  /** Stops the copy (at `preHandler`, read whole or not): a body read later is not kept. */
  stopCopy(): void {
    if (this.tap) this.taken = this.tap.take();
  }

  /**
   * The body for the fingerprint: the bytes as sent when the copy is whole and the parsed
   * value could have lost something (a JSON type, which `JSON.parse` can make alike; a body
   * the parser left as a string or bytes, which decoding can). Otherwise, as before the copy,
   * Fastify's parsed body: a body a `preParsing` hook replaced, one a parser reads later
   * (multipart), or one parsed to another value (a form), fingerprinted as that value.
   */
  async readBody(limit: number): Promise<RequestBody> {
    const { taken, native } = this;
    const contentType = headerValue(native.headers, 'content-type');
    const parsed = native.body;
    // Past a cap below `limit` (a parser whose own bodyLimit is above the route's): the
    // copy says nothing, the parsed body is measured.
    if (taken === 'over' && this.tap !== undefined && this.tap.cap >= limit)
      throw new BodyTooLargeError(limit);
    if (
      taken instanceof Uint8Array &&
      (isJsonContentType(contentType) || typeof parsed === 'string' || parsed instanceof Uint8Array)
    ) {
      if (taken.length > limit) throw new BodyTooLargeError(limit);
      return bodyFromBytes(taken, contentType);
    }
    return bodyFromParsed(parsed, contentType, limit);
  }
}
