import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** One request as the raw server saw it. */
export interface RawSeen {
  n: number;
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

export interface RawServer {
  url: string;
  seen: RawSeen[];
  close(): Promise<void>;
}

/**
 * A bare loopback node:http server (no idempotency layer) whose answers a test scripts, for
 * attacks that need exact control of status, headers and the connection.
 */
export async function startRawServer(
  answer: (seen: RawSeen, res: ServerResponse, req: IncomingMessage) => void | Promise<void>,
): Promise<RawServer> {
  const seen: RawSeen[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const entry: RawSeen = {
        n: seen.length + 1,
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        headers: req.headers,
        body: Buffer.concat(chunks),
      };
      seen.push(entry);
      Promise.resolve(answer(entry, res, req)).catch(() => res.destroy());
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
