import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * What the fault injector does with one request before or after the handler:
 * - `status`: answers itself, never reaching the handler (a gateway error, a rate limiter);
 * - `drop-before`: closes the connection without reaching the handler;
 * - `drop-after`: runs the handler to the end (its outcome recorded), reads the whole response,
 *   then closes the connection without sending a byte: the client saw nothing;
 * - `delay`: waits before handing the request to the handler;
 * - `hang`: never answers (until the server closes).
 */
export type Fault =
  | {
      kind: 'status';
      status: number;
      headers?: Record<string, string>;
      body?: string;
      /** Send the headers and the first bytes of the body, then never finish it. */
      stallBody?: boolean;
    }
  | { kind: 'drop-before' }
  | { kind: 'drop-after' }
  | { kind: 'delay'; ms: number }
  | { kind: 'hang' };

/** One request as the server saw it, faults included. */
export interface SeenRequest {
  n: number;
  method: string;
  path: string;
  key: string | null;
  body: string;
  fault: Fault | undefined;
}

export interface FaultServerOptions {
  /** The idempotent application, on Web Request/Response. */
  handler: (request: Request) => Promise<Response>;
  /** Picks the fault of each request (or none). */
  fault?: (request: SeenRequest) => Fault | undefined;
}

export interface FaultServer {
  url: string;
  seen: SeenRequest[];
  close(): Promise<void>;
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function writeResponse(res: ServerResponse, response: Response): Promise<void> {
  const headers: Record<string, string> = {};
  response.headers.forEach((value, name) => {
    headers[name] = value;
  });
  res.writeHead(response.status, headers);
  if (response.body) {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      res.write(value);
    }
  }
  res.end();
}

/**
 * A loopback node:http server that translates to Web Request/Response, with a fault injector
 * between the client and the handler.
 */
export async function startFaultServer(options: FaultServerOptions): Promise<FaultServer> {
  const seen: SeenRequest[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server: Server = createServer((req, res) => {
    void (async () => {
      const body = await readBody(req);
      const entry: SeenRequest = {
        n: seen.length + 1,
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        key: (req.headers['idempotency-key'] as string | undefined) ?? null,
        body: body.toString('utf8'),
        fault: undefined,
      };
      entry.fault = options.fault?.(entry);
      seen.push(entry);
      const fault = entry.fault;
      if (fault?.kind === 'hang') return;
      if (fault?.kind === 'drop-before') {
        req.socket.destroy();
        return;
      }
      if (fault?.kind === 'status') {
        res.writeHead(fault.status, { 'content-type': 'text/plain', ...fault.headers });
        const text = fault.body ?? `injected ${fault.status}`;
        if (fault.stallBody) res.write(text.slice(0, 1));
        else res.end(text);
        return;
      }
      if (fault?.kind === 'delay') await new Promise((r) => setTimeout(r, fault.ms));
      const headers = new Headers();
      for (const [name, value] of Object.entries(req.headers)) {
        if (typeof value === 'string') headers.set(name, value);
        else if (Array.isArray(value)) for (const v of value) headers.append(name, v);
      }
      const request = new Request(`http://${req.headers.host}${req.url}`, {
        method: req.method,
        headers,
        ...(body.length > 0 && req.method !== 'GET' && req.method !== 'HEAD'
          ? { body: new Uint8Array(body) }
          : {}),
      });
      const response = await options.handler(request);
      if (fault?.kind === 'drop-after') {
        // Reading the body to its end lets the idempotency layer record the outcome.
        await response.arrayBuffer();
        req.socket.destroy();
        return;
      }
      await writeResponse(res, response);
    })().catch((error: unknown) => {
      if (!res.headersSent) {
        res.writeHead(599, { 'content-type': 'text/plain' });
        res.end(`fault server error: ${String(error)}`);
      } else res.destroy();
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
