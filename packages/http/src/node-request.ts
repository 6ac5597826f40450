import type { IncomingMessage } from 'node:http';
import {
  BodyAlreadyReadError,
  BodyTooLargeError,
  bodyFromBytes,
  decodedBodyError,
  isJsonContentType,
  parsedBody,
  type RequestBody,
} from './request-body.js';
import { peekBody } from './request-body-peek.js';

function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * Whether an HTTP/2 request (`node:http2`'s `Http2ServerRequest`, which has a `stream`)
 * without a Content-Length has a body: its body is framed by the protocol, there is one
 * unless its HEADERS frame ended the stream.
 */
function http2Body(req: IncomingMessage, length: string | undefined): boolean {
  if (length !== undefined || !('stream' in req)) return false;
  return (req as { stream?: { endAfterHeaders?: boolean } }).stream?.endAfterHeaders === false;
}

/** Whether the request declares a body (see {@link nodeRequestBody}). */
function declaresBody(req: IncomingMessage, length: string | undefined): boolean {
  return (
    (length !== undefined && length !== '0') ||
    req.headers['transfer-encoding'] !== undefined ||
    http2Body(req, length)
  );
}

/**
 * The body of a Node request for the fingerprint: the bytes a reader kept as `req.rawBody`
 * (a Buffer) when a body parser ran first (`parsed` anything but undefined), else `parsed`
 * (an object only when its Content-Type is JSON: see `bodyFromParsed`); none when the request
 * declares no body (HTTP/1.1: neither a Content-Length nor a Transfer-Encoding; HTTP/2: a
 * stream its headers ended), else the raw bytes, read and put back ({@link peekBody}) so the
 * app's own parsers read them as if we had not.
 * @throws BodyTooLargeError past `limit` bytes
 * @throws BodyAlreadyReadError when something else read the bytes (all or some) before, and
 * kept neither `parsed` nor the bytes as `req.rawBody`: taken as empty, another body under the
 * same key would be replayed this one's outcome. Also when `parsed` may have lost what tells
 * different bodies apart (a form parsed into an object, text decoded with U+FFFD...) and no
 * bytes were kept.
 */
export async function nodeRequestBody(
  req: IncomingMessage,
  parsed: unknown,
  limit: number,
): Promise<RequestBody> {
  const contentType = headerOf(req, 'content-type');
  const length = headerOf(req, 'content-length');
  if (parsed !== undefined) {
    // The bytes, when a reader kept them as a Buffer, are the request itself: fingerprinted
    // first, whatever the type (a parser loses what tells some bodies apart: a form's dropped
    // pairs, JSON's repeated names, a text's leading BOM). Text kept is decoded as `parsed`.
    const raw = (req as { rawBody?: unknown }).rawBody;
    if (raw instanceof Uint8Array && req.readableEnded) {
      if (raw.length > limit) throw new BodyTooLargeError(limit);
      checkKeptLength(req, raw, length);
      return bodyFromBytes(raw, contentType);
    }
    // A parser's value for a request that declares no body (`{}`) stands for none of the
    // losses above: taken as it is, as before.
    const body = parsedBody(parsed, contentType, limit, !declaresBody(req, length));
    if (typeof parsed === 'string') checkTextLength(req, parsed, contentType, length);
    return body;
  }
  if (!declaresBody(req, length)) return { kind: 'none' };
  const seen = peekedBody(req);
  if (seen !== undefined) {
    if (seen.length > limit) throw new BodyTooLargeError(limit);
    return bodyFromBytes(seen, contentType);
  }
  // Bytes were read off the stream by someone else (ours are put back, and remembered).
  if (req.readableDidRead) {
    const raw = rawBodyOf(req);
    if (raw === undefined) throw new BodyAlreadyReadError();
    if (raw.length > limit) throw new BodyTooLargeError(limit);
    if ((req as { rawBody?: unknown }).rawBody instanceof Uint8Array)
      checkKeptLength(req, raw, length);
    return bodyFromBytes(raw, contentType);
  }
  const bytes = await peekBody(req, limit);
  rememberPeeked(req, bytes);
  return bodyFromBytes(bytes, contentType);
}

/**
 * Throws when bytes a reader kept (`req.rawBody`) of a body sent whole (a Content-Length, no
 * Content-Encoding) are not as many as were sent: a `verify` that keeps a part (a prefix)
 * would make different bodies one request.
 */
function checkKeptLength(req: IncomingMessage, raw: Uint8Array, length: string | undefined): void {
  if (length === undefined || !/^\d+$/.test(length.trim())) return;
  const encoding = headerOf(req, 'content-encoding');
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') return;
  if (raw.length !== Number(length.trim()))
    throw new BodyAlreadyReadError(
      `The request body's bytes kept as req.rawBody are ${raw.length} where ${length.trim()} were sent, so they cannot stand for the body: keep the whole body as req.rawBody, or mount the middleware before the body parser`,
    );
}

/**
 * Throws when text a parser decoded from a body sent whole (a Content-Length, no
 * Content-Encoding) is not as long in UTF-8 as the body was: the decoding dropped or changed
 * bytes (a text parser strips a leading BOM; a decoder for another charset than the
 * Content-Type names drops an odd trailing byte), so different bodies may decode alike.
 * JSON types are left out: a JSON parser's string is not the body's text.
 * @internal
 */
export function checkTextLength(
  req: IncomingMessage,
  text: string,
  contentType: string | undefined,
  length: string | undefined,
): void {
  if (length === undefined || isJsonContentType(contentType)) return;
  const encoding = headerOf(req, 'content-encoding');
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') return;
  if (!/^\d+$/.test(length.trim())) return;
  if (Buffer.byteLength(text) !== Number(length.trim()))
    throw decodedBodyError(
      `is ${Buffer.byteLength(text)} bytes as UTF-8 text where ${length.trim()} were sent (a leading BOM stripped, or bytes decoded as another charset)`,
    );
}

/**
 * The body {@link nodeRequestBody} read and put back, for a second look at the same request:
 * kept on the request under a symbol of ours. An entry in a `WeakMap` for every request cost
 * more than the rest of the body's peek (the collector tends such entries one by one); the
 * map only takes the body of a request that refuses the property.
 */
const PEEKED = Symbol('idem.peekedBody');
const peeked = new WeakMap<IncomingMessage, Buffer>();

function peekedBody(req: IncomingMessage): Buffer | undefined {
  const own = (req as IncomingMessage & { [PEEKED]?: unknown })[PEEKED];
  return own instanceof Uint8Array ? (own as Buffer) : peeked.get(req);
}

function rememberPeeked(req: IncomingMessage, bytes: Buffer): void {
  const target = req as IncomingMessage & { [PEEKED]?: unknown };
  try {
    // Not enumerable: the body stays out of `{ ...req }` copies and of a logged request.
    Object.defineProperty(target, PEEKED, { value: bytes, writable: true, configurable: true });
    if (target[PEEKED] === bytes) return;
  } catch {
    // A frozen request, or a Proxy's trap refused it.
  }
  peeked.set(req, bytes);
}

/**
 * The bytes a reader before the middleware kept of a body it read whole (`req.rawBody`, as
 * NestJS's `rawBody` option and the usual raw-body readers keep them), or undefined.
 */
function rawBodyOf(req: IncomingMessage): Uint8Array | undefined {
  if (!req.readableEnded) return undefined;
  const raw: unknown = (req as { rawBody?: unknown }).rawBody;
  if (raw instanceof Uint8Array) return raw;
  if (typeof raw === 'string') return trustedText(raw);
  return undefined;
}

/**
 * A body kept as text, as its UTF-8 bytes; undefined when it holds U+FFFD: a reader that
 * decoded the bytes as UTF-8 puts one for every invalid sequence, so different bodies give
 * the same text (and would be replayed each other's outcome).
 */
function trustedText(text: string): Uint8Array | undefined {
  return text.includes('\uFFFD') ? undefined : Buffer.from(text);
}
