import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sendWebResponse } from '../../src/node.js';

/** A real HTTP server on loopback in front of a Web handler. */
export interface WebServer {
  url: string;
  server: Server;
  close(): Promise<void>;
}

async function toRequest(req: IncomingMessage, signal: AbortSignal): Promise<Request> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const headers = new Headers();
  // HTTP/2's pseudo-headers (`:method`, `:path`) are no fields of a Web `Request`.
  for (const [name, value] of Object.entries(req.headers))
    if (typeof value === 'string' && !name.startsWith(':')) headers.set(name, value);
  const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
  return new Request(`http://127.0.0.1${req.url}`, {
    method: req.method ?? 'GET',
    headers,
    ...(body && req.method !== 'GET' ? { body } : {}),
    signal,
  });
}

/**
 * A `node:http` (or node:http2 compat) request handler in front of a Web handler, as a server
 * does: the request's signal aborts when the response closes before its end (the client
 * left); the answer goes out with `sendWebResponse`, and a handler that throws gets the
 * response destroyed.
 */
export function webNodeHandler(handler: (request: Request) => Response | Promise<Response>) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const gone = new AbortController();
    res.once('close', () => {
      // Both: node:http2's compat response reads `writableFinished` true after a reset.
      if (!(res.writableEnded && res.writableFinished)) gone.abort(new Error('client gone'));
    });
    try {
      await sendWebResponse(res, await handler(await toRequest(req, gone.signal)));
    } catch (error) {
      res.destroy(error instanceof Error ? error : new Error(String(error)));
    }
  };
}

/** Serves `handler` on 127.0.0.1 (a free port unless `port` is given). */
export async function serveWeb(
  handler: (request: Request) => Response | Promise<Response>,
  port = 0,
): Promise<WebServer> {
  const server = createServer(webNodeHandler(handler));
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const address = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${address.port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
