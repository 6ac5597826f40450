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

/**
 * An idem server's keyed event stream (generation 7) that breaks once: the first answer sends
 * event 1 and drops the connection 50 ms later; the resume gets event 2 and ends.
 */
export function breakingEventStream(seen: RawSeen, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'idempotent-generation': '7' });
  if (seen.n === 1) {
    res.write('id: 1\ndata: a\n\n');
    setTimeout(() => res.destroy(), 50);
    return;
  }
  res.end('id: 2\ndata: b\n\n');
}
