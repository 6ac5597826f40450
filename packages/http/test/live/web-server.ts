import { createServer, type IncomingMessage, type Server } from 'node:http';
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
  for (const [name, value] of Object.entries(req.headers))
    if (typeof value === 'string') headers.set(name, value);
  const body = chunks.length > 0 ? Buffer.concat(chunks) : undefined;
  return new Request(`http://127.0.0.1${req.url}`, {
    method: req.method ?? 'GET',
    headers,
    ...(body && req.method !== 'GET' ? { body } : {}),
    signal,
  });
}

/** Serves `handler` on 127.0.0.1 (a free port unless `port` is given). */
export async function serveWeb(
  handler: (request: Request) => Response | Promise<Response>,
  port = 0,
): Promise<WebServer> {
  const server = createServer(async (req, res) => {
    const gone = new AbortController();
    res.once('close', () => {
      if (!res.writableFinished) gone.abort(new Error('client gone'));
    });
    try {
      await sendWebResponse(res, await handler(await toRequest(req, gone.signal)));
    } catch (error) {
      res.destroy(error instanceof Error ? error : new Error(String(error)));
    }
  });
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
