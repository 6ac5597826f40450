import type { IncomingMessage } from 'node:http';
import { bodyFromBytes, bodyFromParsed, type RequestBody } from './request-body.js';
import { peekBody } from './request-body-peek.js';

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * The body of a Node request for the fingerprint: `parsed` when a body parser ran first
 * (anything but undefined), none when the request declares no body, else the raw bytes,
 * read and put back ({@link peekBody}) so the app's own parsers read them as if we had not.
 * A parsed body comes with its bytes when the parser kept them as `req.rawBody` (NestJS
 * with `rawBody: true`, or a body parser's `verify` hook that sets it): a JSON body that
 * `JSON.parse` cannot hold exactly is then fingerprinted by them (see `bodyFromParsed`);
 * `rawBody` names them where they are kept elsewhere (Nest on Fastify: its request's).
 * @throws BodyTooLargeError past `limit` bytes
 */
export async function nodeRequestBody(
  req: IncomingMessage,
  parsed: unknown,
  limit: number,
  rawBody: unknown = (req as { rawBody?: unknown }).rawBody,
): Promise<RequestBody> {
  const contentType = headerOf(req, 'content-type');
  if (parsed !== undefined) {
    const raw = rawBody instanceof Uint8Array ? rawBody : undefined;
    return bodyFromParsed(parsed, contentType, limit, raw);
  }
  const length = headerOf(req, 'content-length');
  if ((length === undefined || length === '0') && req.headers['transfer-encoding'] === undefined) {
    return { kind: 'none' };
  }
  return bodyFromBytes(await peekBody(req, limit), contentType);
}
