import { subscribe } from 'node:diagnostics_channel';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import * as zlib from 'node:zlib';
import { type Http2StreamStart, watchHttp2Streams } from './http2-streams.js';
import { BodyTooLargeError, bodyFromBytes, type RequestBody } from './request-body.js';

type Push = (chunk: unknown, encoding?: BufferEncoding) => boolean;

/** What one middleware reads of a request (see {@link tapRequestBodies}). */
interface TapRule {
  header: string;
  methods: ReadonlySet<string>;
  /** The largest `maxBodyBytes` of the middlewares with this header and these methods. */
  limit: number;
}

/**
 * The rules of every middleware that tapped, shared by the ESM and CJS copies of this module
 * (one subscription, one property on the request for both): one entry a distinct header and
 * set of methods, so an app made again and again (tests), with any limits, adds nothing after
 * the first.
 */
interface TapRegistry {
  rules: Map<string, TapRule>;
  /** The rules' values, read for every request. */
  list: TapRule[];
  subscribed: boolean;
}
const REGISTRY = Symbol.for('idem.requestBodyTap.registry');
const TAP = Symbol.for('idem.requestBodyTap');

function registry(): TapRegistry {
  const global = globalThis as { [REGISTRY]?: TapRegistry };
  let found = global[REGISTRY];
  if (!found) {
    found = { rules: new Map(), list: [], subscribed: false };
    global[REGISTRY] = found;
  }
  return found;
}

/** What the tap wraps: an HTTP/1 request, or the stream of an HTTP/2 one. */
type TappedStream = Pick<IncomingMessage, 'push'>;

/**
 * The body bytes of one request as Node's server pushed them, before any reader: the own
 * `push` of the request (HTTP/1: what Node's parser calls with every chunk of the body, then
 * with null at its end), or of its stream (HTTP/2: what the session calls with every DATA
 * frame's bytes, the compatibility request reading them from there), is wrapped from the
 * request's start to the end of its body. It adds no
 * listener and never changes how or when the stream is read; it sees each byte once whatever
 * readers do with them (bytes put back with `unshift` do not go through `push`). The chunks
 * are kept as Node made them (no copy: each is a fresh allocation of the socket's read), at
 * most `cap` bytes: past that, nothing is kept (`'over'`).
 */
class RequestBodyTap {
  private parts: Buffer[] = [];
  private size = 0;
  private state: 'open' | 'ended' | 'over' | 'released' = 'open';
  /** The request's `push` before the tap (put back at the end of the body, or when stopped). */
  readonly push: Push;

  constructor(
    private readonly req: TappedStream,
    private readonly cap: number,
  ) {
    this.push = req.push as Push;
    req.push = tapPush;
  }

  onPush(chunk: unknown, encoding: BufferEncoding | undefined): void {
    if (this.state !== 'open') return;
    if (chunk === null) {
      this.state = 'ended';
      this.restore();
      return;
    }
    const bytes =
      typeof chunk === 'string'
        ? Buffer.from(chunk, encoding ?? 'utf8')
        : chunk instanceof Uint8Array
          ? (chunk as Buffer)
          : undefined;
    if (bytes === undefined) {
      if (chunk !== undefined) this.stop('released');
      return;
    }
    this.size += bytes.length;
    if (this.size > this.cap) this.stop('over');
    else if (bytes.length > 0) this.parts.push(bytes);
  }

  /** The whole body once its end came (once), `'over'` past the cap, else undefined. */
  take(): Buffer | 'over' | undefined {
    if (this.state === 'over') return 'over';
    if (this.state !== 'ended') return undefined;
    const { parts, size } = this;
    this.stop('released');
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, size);
  }

  /** Stops copying and drops what was kept. */
  release(): void {
    if (this.state !== 'over') this.stop('released');
  }

  private stop(state: 'over' | 'released'): void {
    this.state = state;
    this.parts = [];
    this.restore();
  }

  private restore(): void {
    // Put back as an own property (a delete would slow the request's other properties down),
    // and only when nobody wrapped it after the tap.
    if (this.req.push === tapPush) this.req.push = this.push;
  }
}

type Tapped = TappedStream & { [TAP]?: RequestBodyTap };

/** The `push` of a tapped request: one function for every request (no closure made for each). */
function tapPush(this: Tapped, chunk: unknown, encoding?: BufferEncoding): boolean {
  const tap = this[TAP];
  // Called on something else (a wrapper that kept it as its original, on another stream).
  if (!tap) return (Readable.prototype.push as Push).call(this, chunk, encoding);
  tap.onPush(chunk, encoding);
  return tap.push.call(this, chunk, encoding);
}

/** Whether the request declares a body: a Content-Length past 0, or a Transfer-Encoding. */
function declaresBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return length.trim() !== '0';
  return req.headers['transfer-encoding'] !== undefined;
}

/** The largest limit of the rules a request of `method` with `headers` matches, else -1. */
function capOf(method: string, headers: IncomingHttpHeaders): number {
  let cap = -1;
  for (const rule of registry().list) {
    if (rule.limit > cap && rule.methods.has(method) && headers[rule.header]) cap = rule.limit;
  }
  return cap;
}

function onRequestStart(message: unknown): void {
  const req = (message as { request?: IncomingMessage }).request;
  if (!req || !declaresBody(req)) return;
  const cap = capOf(req.method ?? '', req.headers);
  if (cap < 0) return;
  // Nothing was read yet: the channel is told of a request before Node's parser pushes a byte
  // of its body, and before any listener of the server sees it.
  if (req.readableLength > 0 || req.readableDidRead) return;
  (req as Tapped)[TAP] = new RequestBodyTap(req, cap);
}

/** An HTTP/2 request's stream, as its server opens it (see `watchHttp2Streams`). */
function onStreamStart(stream: Http2StreamStart, headers: IncomingHttpHeaders): void {
  // A body is framed by the protocol: there is one unless the HEADERS frame ended the stream.
  if (stream.endAfterHeaders !== false) return;
  const method = headers[':method'];
  const cap = capOf(typeof method === 'string' ? method : '', headers);
  if (cap < 0 || stream.readableLength > 0 || stream.readableDidRead) return;
  (stream as Tapped)[TAP] = new RequestBodyTap(stream, cap);
}

/**
 * The tap of `req`: its own (HTTP/1), or its stream's (HTTP/2: `node:http2`'s compatibility
 * request, whose `stream` is the one the server opened).
 */
function tapOf(req: IncomingMessage): RequestBodyTap | undefined {
  return (
    (req as Tapped)[TAP] ?? ((req as { stream?: unknown }).stream as Tapped | undefined)?.[TAP]
  );
}

/**
 * Has the body of every request that a middleware made with `options` will fingerprint
 * (its method needs a key and it carries one, up to its `maxBodyBytes`) kept as it comes off
 * the connection, before any body parser reads it: a middleware mounted after a parser then
 * fingerprints the bytes as sent (see {@link tappedRequestBody}), as one mounted before it
 * does, instead of what the parser kept of them. HTTP/1: Node's `http.server.request.start`
 * diagnostics channel, told of a request before its body is read. HTTP/2 (`node:http2`'s
 * servers): the request's stream, as its server opens it, before the compatibility layer
 * makes the request (see `watchHttp2Streams`); connections accepted before the first call are
 * not seen. Once a process, then once a distinct rule; requests without a key are left alone.
 */
export function tapRequestBodies(options: {
  headerName?: string | undefined;
  methods?: readonly string[] | undefined;
  maxBodyBytes?: number | undefined;
}): void {
  const header = (options.headerName ?? 'Idempotency-Key').toLowerCase();
  const methods = (options.methods ?? ['POST', 'PATCH']).map((m) => m.toUpperCase()).sort();
  const limit = options.maxBodyBytes ?? 1_048_576;
  const taps = registry();
  // One rule a header and set of methods, at the largest limit asked: a request it matches
  // is kept up to the largest limit of the rules it matches anyway, so apps made with ever
  // other limits (one for each tenant) add nothing to what every request reads.
  const id = `${header} ${methods.join(',')}`;
  const rule = taps.rules.get(id);
  if (rule === undefined) {
    taps.rules.set(id, { header, methods: new Set(methods), limit });
    taps.list = [...taps.rules.values()];
  } else if (limit > rule.limit) rule.limit = limit;
  if (taps.subscribed) return;
  taps.subscribed = true;
  subscribe('http.server.request.start', onRequestStart);
  watchHttp2Streams(onStreamStart);
}

/**
 * Stops the tap of `req` and drops what it kept: a middleware that reads the bytes itself, or
 * a route no idem middleware runs before that streams a keyed body away (an upload), whose
 * tapped bytes would otherwise stay referenced from the request while it lives (at most the
 * largest `maxBodyBytes`): nothing at the request's start tells which route, if any, reads
 * it. Nothing when `req` was not tapped.
 */
export function releaseTap(req: IncomingMessage): void {
  tapOf(req)?.release();
}

/**
 * The body of `req` as it came off the connection, whole (see {@link tapRequestBodies}),
 * decoded of its Content-Encoding as the parsers do (gzip, deflate, br, zstd: a body labelled so
 * whose bytes do not decode is taken as sent, as a reader that does not inflate got it);
 * undefined when it was not tapped, its end has not come, or its encoding is another, and
 * when what a reader kept or made of the bytes (`kept`: bytes, or text as its UTF-8) is the
 * bytes as sent under an encoding: that reader did not inflate, and what it kept is what the
 * app got (`hello` labelled gzip is not gzip(`hello`) for it), so the caller's body stands.
 * That is checked before anything is inflated: a small gzip that inflates past the limit is
 * no body too large for a reader that keeps it as it came.
 * @throws BodyTooLargeError past `limit` bytes (decoded)
 */
function tappedRequestBody(
  req: IncomingMessage,
  limit: number,
  kept: Uint8Array | string | undefined,
): RequestBody | undefined {
  const tap = tapOf(req);
  if (tap === undefined) return undefined;
  const sent = tap.take();
  if (sent === undefined) return undefined;
  if (sent === 'over') throw new BodyTooLargeError(limit);
  const encoding = req.headers['content-encoding'];
  // Only a labelled body is compared (rare): unlabelled, the bytes are taken as they are.
  if (kept !== undefined && isLabelled(encoding) && isSent(sent, kept)) return undefined;
  // Inflated first, up to the limit: a body that inflates past it is refused (413) whoever
  // inflated it, as before.
  const bytes = decoded(sent, encoding, limit);
  if (bytes === undefined) return undefined;
  if (bytes.length > limit) throw new BodyTooLargeError(limit);
  const type = req.headers['content-type'];
  return bodyFromBytes(bytes, type);
}

/** Whether a Content-Encoding names a coding (not none, empty or `identity`). */
function isLabelled(encoding: string | undefined): boolean {
  const name = encoding?.trim().toLowerCase();
  return name !== undefined && name !== '' && name !== 'identity';
}

/** Whether `kept` (bytes, or text as its UTF-8) is `sent`, byte for byte. */
function isSent(sent: Buffer, kept: Uint8Array | string): boolean {
  if (typeof kept !== 'string') return sent.equals(kept);
  return Buffer.byteLength(kept) === sent.length && sent.equals(Buffer.from(kept));
}

type Decode = (bytes: Buffer, options: { maxOutputLength: number }) => Buffer;
const zstd = (zlib as { zstdDecompressSync?: Decode }).zstdDecompressSync;

/**
 * The decoders of the encodings the parsers inflate (body-parser: gzip, deflate, br, and zstd
 * where zlib has it; Koa's inflation: gzip and deflate alike, br). `unzip` takes a gzip or a
 * zlib stream whichever it is labelled, as inflation does (body-parser refuses the other with
 * 400: the middleware never sees it).
 */
const DECODERS: Record<string, Decode> = {
  gzip: zlib.unzipSync,
  'x-gzip': zlib.unzipSync,
  deflate: zlib.unzipSync,
  br: zlib.brotliDecompressSync,
  ...(zstd ? { zstd } : {}),
};

function decoded(sent: Buffer, encoding: string | undefined, limit: number): Buffer | undefined {
  const name = encoding?.trim().toLowerCase();
  if (!name || name === 'identity') return sent;
  const decode = Object.hasOwn(DECODERS, name) ? DECODERS[name] : undefined;
  if (!decode) return undefined;
  try {
    // One byte past the limit is enough to refuse: a small bomb is never inflated whole.
    return decode(sent, { maxOutputLength: limit + 1 });
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE')
      throw new BodyTooLargeError(limit);
    // Not that encoding: no parser inflated it (it would have refused it), the bytes as sent
    // are what a reader got.
    return sent;
  }
}

/**
 * `body`, what a middleware after a reader took of the request once its checks passed (bytes
 * or text the reader kept, text or values a parser made), or in its place the bytes as they
 * came off the connection when they were tapped (see {@link tappedRequestBody}): what the
 * reader kept or decoded may have lost what tells two bodies apart (a leading BOM, an odd
 * byte of UTF-16, a prefix kept, a form's dropped pairs). The tap never makes a request
 * refused or taken that was not: it only tells taken ones apart by their bytes.
 * @param kept what `body` is made of when a reader kept or made it of the bytes: the bytes it
 * kept (`req.rawBody`), or the Buffer or text it parsed them into. Equal to the bytes as sent
 * under a Content-Encoding, they are taken as they are, not inflated: the reader did not
 * inflate them.
 * @throws BodyTooLargeError past `limit` bytes as sent (decoded)
 */
export function tappedInstead(
  req: IncomingMessage,
  limit: number,
  body: RequestBody,
  kept?: Uint8Array | string,
): RequestBody {
  return tappedRequestBody(req, limit, kept) ?? body;
}
