import { connect as http2Connect } from 'node:http2';
import { connect } from 'node:net';

/**
 * Sends one request on a connection of its own (`Connection: close`) and resolves with the
 * raw bytes of the response, for checks that must see the bytes a client got (a status
 * line's reason phrase as Latin-1, header spellings). The request: `POST path` with the
 * `Idempotency-Key`, a JSON body, and `extra` header lines (each ending in CRLF).
 */
export function rawPost(
  url: string,
  path: string,
  key: string,
  body = '{"a":1}',
  extra = '',
  version = '1.1',
): Promise<Buffer> {
  return rawExchange(
    url,
    `POST ${path} HTTP/${version}\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: ${key}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`,
  );
}

/**
 * Writes `text` (one or more raw requests, pipelined) on a new connection to `url`'s port on
 * 127.0.0.1 and gives every byte that came back until the connection closed (or `timeoutMs`
 * passed: the connection is then destroyed).
 */
export function rawExchange(url: string, text: string, timeoutMs = 10_000): Promise<Buffer> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), '127.0.0.1');
    const parts: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('data', (part: Buffer) => parts.push(part));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
    socket.write(text);
  });
}

/** The final status line's bytes of a raw response (after any 1xx), without its CRLF. */
export function rawStatusLine(raw: Buffer): Buffer {
  let at = 0;
  while (/^HTTP\/1\.[01] 1\d\d /.test(raw.subarray(at, at + 13).toString('latin1')))
    at = raw.indexOf('\r\n\r\n', at) + 4;
  return raw.subarray(at, raw.indexOf('\r\n', at));
}

/** Whether a raw response carries `Idempotent-Replayed: true`. */
export function rawIsReplay(raw: Buffer): boolean {
  return /\r\nidempotent-replayed: true\r\n/i.test(raw.toString('latin1'));
}

/** The body of a raw response as Latin-1 text, chunked framing removed. */
export function rawBodyText(raw: Buffer): string {
  const text = raw.toString('latin1');
  const at = text.indexOf('\r\n\r\n');
  const rest = text.slice(at + 4);
  if (!/\r\ntransfer-encoding: chunked/i.test(text.slice(0, at))) return rest;
  let out = '';
  let i = 0;
  for (;;) {
    const eol = rest.indexOf('\r\n', i);
    const size = Number.parseInt(rest.slice(i, eol), 16);
    if (!(size > 0)) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    i = eol + 2 + size + 2;
  }
}

/** A raw response's body as its head frames it (see {@link rawFraming}). */
export interface RawFraming {
  /** What frames the body: both headers at once is a framing error (RFC 9112 6.3). */
  framing: 'content-length' | 'chunked' | 'close' | 'both';
  /** The body bytes as Latin-1 text, as the framing delimits them. */
  body: string;
  /** Whether the bytes after the head are exactly the framed body (no more, no fewer). */
  exact: boolean;
}

/** The first response of a raw exchange, read as its head frames it (see {@link rawResponse}). */
export interface RawResponse {
  /** The head, status line first (the final one, after any 1xx), lowercased, without its CRLFCRLF. */
  head: string;
  /** What frames the body ('none': read as `bodiless`, a response to HEAD, a 204 or 304). */
  framing: RawFraming['framing'] | 'none';
  /** The body bytes as Latin-1 text, as the framing delimits them. */
  body: string;
  /** Whether the whole framed body came (the last chunk, every `Content-Length` byte). */
  complete: boolean;
  /** The bytes after that body (a pipelined request's response), as Latin-1 text. */
  rest: string;
}

/**
 * Reads the first response of a raw exchange (after any 1xx) by its own framing, and what came
 * after it: for a check that a response on a kept-alive connection ends where it says it does,
 * so the response of a request pipelined behind it starts right after. `bodiless`: the
 * response is to a HEAD request, or a 204/304 (no body, whatever its head says; RFC 9110 9.3.2).
 */
export function rawResponse(raw: Buffer, bodiless = false): RawResponse {
  const text = raw.toString('latin1');
  const status = rawStatusLine(raw);
  const start = raw.indexOf(status);
  const at = text.indexOf('\r\n\r\n', start);
  const head = text.slice(start, at).toLowerCase();
  const rest = text.slice(at + 4);
  if (bodiless) return { head, framing: 'none', body: '', complete: true, rest };
  const lengths = [...head.matchAll(/\r\ncontent-length: *([^\r]*)/g)].map((m) => m[1]);
  const chunked = /\r\ntransfer-encoding: *[^\r]*chunked/.test(head);
  if (lengths.length > 0 && chunked)
    return { head, framing: 'both', body: rest, complete: false, rest: '' };
  if (chunked) {
    let body = '';
    let i = 0;
    for (;;) {
      const eol = rest.indexOf('\r\n', i);
      const size = Number.parseInt(rest.slice(i, eol), 16);
      if (eol === -1 || Number.isNaN(size))
        return { head, framing: 'chunked', body, complete: false, rest: '' };
      if (size === 0)
        return { head, framing: 'chunked', body, complete: true, rest: rest.slice(eol + 4) };
      body += rest.slice(eol + 2, eol + 2 + size);
      i = eol + 2 + size + 2;
    }
  }
  if (lengths.length === 0) return { head, framing: 'close', body: rest, complete: true, rest: '' };
  const length = Number(lengths[0]);
  const body = rest.slice(0, length);
  const complete = lengths.length === 1 && body.length === length;
  return { head, framing: 'content-length', body, complete, rest: rest.slice(length) };
}

/**
 * How the final response of a raw exchange is framed, and whether its bytes match: for a check
 * that a response never carries a `Content-Length` of another body (bytes left over would be
 * read as the connection's next response; bytes missing leave a client waiting) nor one beside
 * chunked framing. A response read up to the connection's close (`Connection: close`).
 */
export function rawFraming(raw: Buffer): RawFraming {
  const { framing, body, complete, rest } = rawResponse(raw);
  if (framing === 'both' || framing === 'none') return { framing: 'both', body, exact: false };
  return { framing, body, exact: complete && rest === '' };
}

/** The answer to {@link h2Post}. */
export interface H2Answer {
  status: number;
  /** The response's header fields (lowercase names; pseudo-headers left out). */
  headers: Record<string, string>;
  body: string;
  /** The stream had not closed after `timeoutMs` (an answer that never ended): closed then. */
  hung: boolean;
}

/**
 * A keyed JSON `POST` stream on an h2c session of its own (errors of both ignored); the caller
 * ends the stream with the body and closes the session.
 */
export function h2PostStream(
  url: string,
  path: string,
  key: string,
  extra: Record<string, string> = {},
) {
  const session = http2Connect(url);
  session.on('error', () => {});
  const stream = session.request({
    ':method': 'POST',
    ':path': path,
    'idempotency-key': key,
    'content-type': 'application/json',
    ...extra,
  });
  stream.on('error', () => {});
  return { session, stream };
}

/**
 * A keyed POST over h2c (prior knowledge) to `url`, on a session of its own, with a JSON body
 * and `extra` header fields: the answer once its stream closed, or after `timeoutMs` with
 * `hung` set (the stream is then closed).
 */
export function h2Post(
  url: string,
  path: string,
  key: string,
  extra: Record<string, string> = {},
  timeoutMs = 10_000,
): Promise<H2Answer> {
  return new Promise((resolve) => {
    const { session, stream } = h2PostStream(url, path, key, extra);
    const answer: H2Answer = { status: 0, headers: {}, body: '', hung: false };
    const timer = setTimeout(() => {
      answer.hung = true;
      stream.close();
    }, timeoutMs);
    stream.on('response', (head) => {
      answer.status = Number(head[':status']);
      for (const [name, value] of Object.entries(head))
        if (!name.startsWith(':') && value !== undefined) answer.headers[name] = String(value);
    });
    stream.setEncoding('latin1');
    stream.on('data', (part: string) => {
      answer.body += part;
    });
    stream.on('close', () => {
      clearTimeout(timer);
      session.close();
      resolve(answer);
    });
    stream.end('{"a":1}');
  });
}
