import type { IncomingMessage } from 'node:http';
import { BodyTooLargeError } from './request-body.js';

/**
 * Whether the buffered bytes are the whole body its `Content-Length` declares: nothing more
 * can come (the parser ends the message there).
 */
function wholeBodyBuffered(req: IncomingMessage): boolean {
  const declared = req.headers['content-length'];
  return (
    declared !== undefined &&
    req.headers['transfer-encoding'] === undefined &&
    Number(declared) === req.readableLength
  );
}

/**
 * Every byte a request holds (no encoding set), read in one `read()` and put back
 * at once (see {@link peekBody}); undefined, with nothing changed, when there was nothing.
 */
function readBuffered(req: IncomingMessage): Buffer | undefined {
  const chunk: Buffer | null = req.read();
  if (chunk === null) return undefined;
  req.unshift(chunk);
  return chunk;
}

/**
 * Reads the whole body of `req` and puts it back: afterwards the stream holds the same bytes
 * and has not ended, as if nobody had read it, so the app's own body parser (`express.json`,
 * `express.text`, multer, its own reader) gets exactly what it would have got without us.
 *
 * The stream is read in paused mode and its end is never consumed: the last `read()` only
 * schedules the `'end'` event, and the bytes are unshifted back in the same tick, before
 * that event would find the buffer empty.
 *
 * @throws BodyTooLargeError past `limit` bytes; the rest of the body is then discarded.
 */
export function peekBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  // Nothing left to read: consumed by someone else, or an empty body already complete
  // (reading it would end the stream).
  if (req.readableEnded || (bodyEnded(req) && req.readableLength === 0)) {
    return Promise.resolve(Buffer.alloc(0));
  }
  // The usual case of a small body: every byte of it is buffered by the time it is asked
  // for (it came with the head; the parser marks the request complete a little later). Read
  // and put back in this tick, as `settle` does, with no listener added or removed and no
  // event waited for.
  if (
    req.readableLength > 0 &&
    req.readableLength <= limit &&
    req.readableFlowing !== true &&
    req.readableEncoding === null &&
    !req.destroyed &&
    (req.complete || wholeBodyBuffered(req))
  ) {
    const body = readBuffered(req);
    if (body !== undefined) return Promise.resolve(body);
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;

    function settle(error?: Error): void {
      req.off('readable', onReadable);
      req.off('error', settle);
      req.off('close', onClose);
      if (error) {
        if (error instanceof BodyTooLargeError) req.resume();
        reject(error);
        return;
      }
      const body = Buffer.concat(parts, size);
      if (size > 0) req.unshift(body);
      resolve(body);
    }

    function onReadable(): void {
      // Read only while bytes are buffered: a read of an empty, ended stream would end it.
      while (req.readableLength > 0) {
        const chunk: Buffer | string | null = req.read();
        if (chunk === null) break;
        const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
        parts.push(bytes);
        size += bytes.length;
        if (size > limit) {
          settle(new BodyTooLargeError(limit));
          return;
        }
      }
      // The end is pushed: every byte is read by now.
      if (bodyEnded(req)) settle();
    }

    function onClose(): void {
      settle(new Error('The client went away before the request body was read'));
    }

    req.on('readable', onReadable);
    req.on('error', settle);
    req.on('close', onClose);
  });
}

/**
 * Whether the end of `req`'s body was pushed (every byte of it is buffered or read), its
 * `'end'` not emitted yet. `complete` turns true as Node's HTTP/1 parser pushes the end; an
 * HTTP/2 request (`node:http2`'s `Http2ServerRequest`, which has a `stream`) says so only
 * once the end is emitted (or the stream closed): its stream state tells it.
 */
function bodyEnded(req: IncomingMessage): boolean {
  return (
    req.complete ||
    ('stream' in req &&
      (req as { _readableState?: { ended?: boolean } })._readableState?.ended === true)
  );
}
