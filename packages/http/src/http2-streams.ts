import { subscribe } from 'node:diagnostics_channel';
import type { IncomingHttpHeaders } from 'node:http';

/** An HTTP/2 stream as {@link watchHttp2Streams} hands it over. */
export interface Http2StreamStart {
  /** Whether the HEADERS frame ended the stream (no body follows). */
  endAfterHeaders?: boolean;
  push: (chunk: unknown, encoding?: BufferEncoding) => boolean;
  readableLength: number;
  readableDidRead?: boolean;
}

type StreamListener = (stream: Http2StreamStart, headers: IncomingHttpHeaders) => void;

/** What of a server that accepted a connection is read: an HTTP/2 server has `updateSettings`. */
interface AcceptingServer {
  updateSettings?: unknown;
  prependListener?: (event: 'stream', listener: StreamListener) => unknown;
  [WATCHED]?: true;
}

/** Marks a server whose streams are watched (shared by the ESM and CJS copies). */
const WATCHED = Symbol.for('idem.requestBodyTap.http2');

/**
 * Calls `onStream` with every stream an HTTP/2 server of this process opens for a request
 * (`node:http2`'s `createServer` and `createSecureServer`), before the server's own listeners
 * see it: node:http2's compatibility layer, which makes the `Http2ServerRequest` and reads the
 * body from the stream, comes after. Node 20 has no diagnostics channel for HTTP/2 streams;
 * `net.server.socket` tells of every connection a server accepts (before it reads a byte of
 * it), with the server, and an HTTP/2 one gets a `stream` listener put first, once. Call once
 * a process. Per connection: one property read; per stream: `onStream`. Connections a server
 * is handed otherwise (`server.emit('connection', socket)`) are not seen.
 */
export function watchHttp2Streams(onStream: StreamListener): void {
  subscribe('net.server.socket', (message) => {
    const server = (message as { socket?: { server?: AcceptingServer } }).socket?.server;
    if (typeof server?.updateSettings !== 'function' || server[WATCHED]) return;
    if (typeof server.prependListener !== 'function') return;
    server[WATCHED] = true;
    server.prependListener('stream', onStream);
  });
}
