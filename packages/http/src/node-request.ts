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
 * @throws BodyTooLargeError past `limit` bytes
 */
export async function nodeRequestBody(
  req: IncomingMessage,
  parsed: unknown,
  limit: number,
): Promise<RequestBody> {
  const contentType = headerOf(req, 'content-type');
  if (parsed !== undefined) return bodyFromParsed(parsed, contentType, limit);
  const length = headerOf(req, 'content-length');
  if ((length === undefined || length === '0') && req.headers['transfer-encoding'] === undefined) {
    return { kind: 'none' };
  }
  return bodyFromBytes(await peekBody(req, limit), contentType);
}
