import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { ResponseRecorder } from './recorder.js';

type Chunk = string | Uint8Array;
type Callback = (error?: Error | null) => void;

function toBuffer(chunk: Chunk, encoding?: BufferEncoding): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk, encoding ?? 'utf8') : Buffer.from(chunk);
}

/** Node's outgoing headers (plus any passed to `writeHead`) as a Web `Headers`. */
export function headersOf(res: ServerResponse, extra?: unknown): Headers {
  const headers = new Headers();
  const add = (name: string, value: unknown) => {
    if (value === undefined || value === null) return;
    for (const item of Array.isArray(value) ? value : [value]) headers.append(name, String(item));
  };
  for (const [name, value] of Object.entries(res.getHeaders() as OutgoingHttpHeaders))
    add(name, value);
  if (Array.isArray(extra)) {
    // writeHead(status, [name, value, name, value, ...]) or [[name, value], ...]
    const flat = extra.flat() as unknown[];
    for (let i = 0; i + 1 < flat.length; i += 2) headers.set(String(flat[i]), String(flat[i + 1]));
  } else if (extra && typeof extra === 'object') {
    for (const [name, value] of Object.entries(extra)) {
      headers.delete(name);
      add(name, value);
    }
  }
  return headers;
}

/**
 * Feeds everything the app writes to `res` into `recorder` while it goes out: chunks pass
 * through live; the end of the response (and the last bytes of a body of known length) is
 * held until the outcome is recorded; when recording fails the response is destroyed
 * instead of ended, and a response the app destroys releases the key. When the client
 * goes away first, the response is still recorded if the app ends it within a lease.
 */
export function recordServerResponse(res: ServerResponse, recorder: ResponseRecorder): void {
  type Loose = (...args: unknown[]) => unknown;
  const original = {
    writeHead: res.writeHead.bind(res) as Loose,
    write: res.write.bind(res) as Loose,
    end: res.end.bind(res) as Loose,
    destroy: res.destroy.bind(res) as Loose,
  };
  const held: Buffer[] = [];
  let started = false;
  let ending = false;

  const start = (extra?: unknown) => {
    if (started) return;
    started = true;
    recorder.start(res.statusCode, headersOf(res, extra));
  };

  res.writeHead = function writeHead(statusCode: number, ...rest: unknown[]) {
    res.statusCode = statusCode;
    start(typeof rest[0] === 'string' ? rest[1] : rest[0]);
    return original.writeHead(statusCode, ...rest);
  } as ServerResponse['writeHead'];

  res.write = function write(chunk: Chunk, encoding?: BufferEncoding | Callback, cb?: Callback) {
    const callback = typeof encoding === 'function' ? encoding : cb;
    const buffer = toBuffer(chunk, typeof encoding === 'string' ? encoding : undefined);
    if (ending) return original.write(buffer, callback);
    start();
    if (recorder.capture(buffer)) return original.write(buffer, callback);
    held.push(buffer);
    if (callback) queueMicrotask(() => callback());
    return true;
  } as ServerResponse['write'];

  res.end = function end(
    chunk?: Chunk | Callback,
    encoding?: BufferEncoding | Callback,
    cb?: Callback,
  ) {
    if (ending) return res;
    ending = true;
    let callback = cb;
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    start();
    if (chunk !== undefined && chunk !== null) {
      const buffer = toBuffer(chunk, encoding as BufferEncoding | undefined);
      recorder.capture(buffer);
      if (buffer.length > 0) held.push(buffer);
    }
    recorder.finish().then(
      () => {
        for (const buffer of held) original.write(buffer);
        original.end(callback);
      },
      (error: unknown) => {
        original.destroy(error instanceof Error ? error : new Error(String(error)));
      },
    );
    return res;
  } as ServerResponse['end'];

  // The client went away: the app may still end the response (recorded), or never will.
  res.once('close', () => {
    if (!ending) recorder.clientGone();
  });

  res.destroy = function destroy(error?: Error) {
    if (!ending) void recorder.fail(error);
    return original.destroy(error);
  } as ServerResponse['destroy'];
}

/** Writes a Web `Response` (a replay or a problem) to a Node response, chunk by chunk. */
export async function sendWebResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status;
  for (const [name, value] of response.headers) res.setHeader(name, value);
  if (response.body === null) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  try {
    for (let read = await reader.read(); !read.done; read = await reader.read())
      res.write(read.value);
    res.end();
  } catch (error) {
    res.destroy(error instanceof Error ? error : new Error(String(error)));
  }
}

/** One header of a Node request as a single string (repeated fields joined by ", "). */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value.join(', ') : value;
}
