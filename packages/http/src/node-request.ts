import type { IncomingMessage } from 'node:http';
import { isAmbiguousJson } from './json-ambiguity.js';
import {
  BodyAlreadyReadError,
  BodyTooLargeError,
  bodyFromBytes,
  bodyFromParsed,
  decodedBodyError,
  isJsonContentType,
  parsedBody,
  type RequestBody,
} from './request-body.js';
import { peekBody } from './request-body-peek.js';
import { releaseTap, tappedInstead } from './request-body-tap.js';

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
    const kept = keptBytesBody(req, raw, limit);
    if (kept !== undefined) return tappedInstead(req, limit, kept, raw as Uint8Array);
    // A parser's value for a request that declares no body (`{}`), or whose body turned out
    // empty (chunked, no byte), stands for none of the losses above: taken as it is.
    const body = parsedBody(
      parsed,
      contentType,
      limit,
      !declaresBody(req, length) || bodyWasEmpty(req),
    );
    if (typeof parsed === 'string') checkTextLength(req, parsed, contentType, length);
    // What a parser kept or made of the bytes is taken only as far as the checks above go:
    // the bytes as sent, when tapped, are the body. A JSON-typed object too: nothing tells a
    // JSON parser's value from one another parser made of a body that starts like JSON (a
    // form parser under every type makes `{"a":1}&=2` and `{"a":1}&=9` one object), and the
    // bytes' fingerprint is a JSON parser's value's, but for what the value loses (a repeated
    // member name, an integer past 2^53), as when idem reads the body first. A Buffer or text
    // parsed is what the reader made of the bytes: equal to them as sent under a coding, the
    // reader did not inflate them, and they stand.
    return tappedInstead(req, limit, body, keptValue(parsed));
  }
  if (!declaresBody(req, length)) return { kind: 'none' };
  const seen = peekedBody(req);
  if (seen !== undefined) {
    if (seen.length > limit) throw new BodyTooLargeError(limit);
    return bodyFromBytes(seen, contentType);
  }
  // Bytes were read off the stream by someone else (ours are put back, and remembered).
  if (req.readableDidRead) {
    const raw = (req as { rawBody?: unknown }).rawBody;
    const kept = keptBytesBody(req, raw, limit);
    if (kept !== undefined) return tappedInstead(req, limit, kept, raw as Uint8Array);
    const text = keptTextOf(req);
    if (text === undefined) throw new BodyAlreadyReadError();
    if (text.length > limit) throw new BodyTooLargeError(limit);
    // The text's bytes: the bytes as sent when the reader did not inflate them.
    return tappedInstead(req, limit, bodyFromBytes(text, contentType), text);
  }
  // Read here and put back: the tap has nothing more to give.
  releaseTap(req);
  const bytes = await peekBody(req, limit);
  rememberPeeked(req, bytes);
  return bodyFromBytes(bytes, contentType);
}

/** `parsed` when it is bytes or text (what a reader made of the bytes), else undefined. */
function keptValue(parsed: unknown): Uint8Array | string | undefined {
  return parsed instanceof Uint8Array || typeof parsed === 'string' ? parsed : undefined;
}

/**
 * `body`, a JSON parser's value taken by {@link nodeRequestBody}, or the JSON text the parser
 * kept (`text`: @koa/bodyparser's `ctx.request.rawBody`) in its place when the text says more
 * than the value: a repeated member name, a number the value rounds (see `isAmbiguousJson`),
 * which make different bodies parse alike. The text is taken as a parsed string is (refused
 * when it holds U+FFFD or a lone surrogate). One scan of the text for the usual body.
 * @internal
 */
export function keptJsonText(
  body: RequestBody,
  text: string,
  contentType: string | undefined,
  limit: number,
): RequestBody {
  if (body.kind !== 'json' || body.bytes !== undefined || !isAmbiguousJson(text)) return body;
  return bodyFromParsed(text, contentType, limit);
}

/**
 * Whether the body a reader read whole before the middleware had no byte (a chunked request
 * that sent none): the stream ended without ever giving data.
 */
function bodyWasEmpty(req: IncomingMessage): boolean {
  const state = (req as { _readableState?: { dataEmitted?: unknown } })._readableState;
  return req.readableEnded && state?.dataEmitted === false;
}

/**
 * The bytes a reader kept of the body (`kept`: `req.rawBody`, Koa's `ctx.request.rawBody`,
 * the Fastify request's `rawBody` under NestJS), as the body for the fingerprint, when they
 * are a Buffer (a `Uint8Array`) and the request stream ended; else undefined (the caller goes
 * on with the parsed value or the raw bytes). Taken before a parsed value, whatever the
 * type (see {@link nodeRequestBody}).
 * @param name how the error names where the bytes were kept
 * @throws BodyTooLargeError past `limit` bytes
 * @throws BodyAlreadyReadError when the bytes are not as many as the Content-Length of a body
 * sent whole (no Content-Encoding) says: a reader that keeps a part (a prefix, a signature
 * window) would make different bodies one request. A chunked or compressed body is not
 * measured (see {@link declaredLength}).
 * @internal
 */
export function keptBytesBody(
  req: IncomingMessage,
  kept: unknown,
  limit: number,
  name = 'req.rawBody',
): RequestBody | undefined {
  if (!(kept instanceof Uint8Array) || !req.readableEnded) return undefined;
  if (kept.length > limit) throw new BodyTooLargeError(limit);
  const sent = declaredLength(req, headerOf(req, 'content-length'));
  if (sent !== undefined && kept.length !== sent)
    throw new BodyAlreadyReadError(
      `The request body's bytes kept as ${name} are ${kept.length} where ${sent} were sent, so they cannot stand for the body: keep the whole body as ${name}, or mount the middleware before the body parser`,
    );
  return bodyFromBytes(kept, headerOf(req, 'content-type'));
}

/**
 * How many bytes a body sent whole says it has: its Content-Length, when that is a number
 * and the body has no Content-Encoding (none, an empty one, or `identity`: the parsers read
 * `'' || 'identity'` alike); else undefined: a chunked body has no count, and a compressed
 * one's count is not that of the bytes a parser inflated.
 */
function declaredLength(req: IncomingMessage, length: string | undefined): number | undefined {
  if (length === undefined || !/^\d+$/.test(length.trim())) return undefined;
  const encoding = headerOf(req, 'content-encoding')?.trim().toLowerCase();
  if (encoding !== undefined && encoding !== '' && encoding !== 'identity') return undefined;
  return Number(length.trim());
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
  if (isJsonContentType(contentType)) return;
  const sent = declaredLength(req, length);
  if (sent !== undefined && Buffer.byteLength(text) !== sent)
    throw decodedBodyError(
      `is ${Buffer.byteLength(text)} bytes as UTF-8 text where ${sent} were sent (a leading BOM stripped, or bytes decoded as another charset)`,
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
 * The text a reader before the middleware kept of a body it read whole (`req.rawBody` as a
 * string: kept bytes, a Buffer, are {@link keptBytesBody}'s), as its UTF-8 bytes, or
 * undefined.
 */
function keptTextOf(req: IncomingMessage): Uint8Array | undefined {
  if (!req.readableEnded) return undefined;
  const raw: unknown = (req as { rawBody?: unknown }).rawBody;
  return typeof raw === 'string' ? trustedText(raw) : undefined;
}

/**
 * A body kept as text, as its UTF-8 bytes; undefined when it holds U+FFFD: a reader that
 * decoded the bytes as UTF-8 puts one for every invalid sequence, so different bodies give
 * the same text (and would be replayed each other's outcome).
 */
function trustedText(text: string): Uint8Array | undefined {
  return text.includes('\uFFFD') ? undefined : Buffer.from(text);
}
