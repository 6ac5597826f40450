import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A loopback proxy that injects network faults between a client and the server. A request
 * asks for a fault with the `x-demo-fault` header (removed before forwarding), applied to
 * the first attempt of each idempotency key only:
 * - `drop-response`: forward the request, read the server's whole response (so the server
 *   has committed and recorded it), then cut the client's connection without a byte;
 * - `cut-stream:N`: pass the response head and its first N body bytes, then cut both
 *   connections (the client sees a stream break mid-way).
 */
export interface FaultProxy {
  url: string;
  /** Faults injected so far. */
  readonly injected: { dropped: number; cut: number };
  /** Points the proxy at another server (after a restart). */
  retarget(url: string): void;
  close(): Promise<void>;
}

const FAULT_HEADER = 'x-demo-fault';

function forwardHeaders(headers: IncomingHttpHeaders, target: URL): IncomingHttpHeaders {
  const out: IncomingHttpHeaders = { ...headers, host: target.host };
  delete out[FAULT_HEADER];
  return out;
}

/** Starts the proxy on 127.0.0.1 and a free port. */
export async function startFaultProxy(targetUrl: string): Promise<FaultProxy> {
  let target = new URL(targetUrl);
  const seen = new Set<string>();
  const injected = { dropped: 0, cut: 0 };

  function faultFor(req: IncomingMessage): string | undefined {
    const fault = req.headers[FAULT_HEADER];
    const key = req.headers['idempotency-key'];
    if (typeof fault !== 'string' || typeof key !== 'string') return undefined;
    const id = `${fault}\u0000${key}`;
    if (seen.has(id)) return undefined;
    seen.add(id);
    return fault;
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const fault = faultFor(req);
    const upstream = httpRequest(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: forwardHeaders(req.headers, target),
      },
      (answer) => {
        if (fault === 'drop-response') {
          // Let the server finish (and record), then lose the answer on the way back.
          answer.resume();
          answer.on('end', () => {
            injected.dropped += 1;
            req.socket.destroy();
          });
          return;
        }
        const cutAt = fault?.startsWith('cut-stream:') ? Number(fault.slice(11)) : undefined;
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (cutAt === undefined) {
          answer.pipe(res);
          return;
        }
        let sent = 0;
        answer.on('data', (chunk: Buffer) => {
          if (sent >= cutAt) return;
          const part = chunk.subarray(0, cutAt - sent);
          sent += part.length;
          res.write(part);
          if (sent >= cutAt) {
            injected.cut += 1;
            // Both sides see the connection drop, as with a real network failure.
            setTimeout(() => {
              req.socket.destroy();
              answer.destroy();
            }, 5);
          }
        });
        answer.on('end', () => res.end());
      },
    );
    upstream.on('error', () => {
      if (!res.headersSent) {
        // Target down (e.g. restarting): the client sees a network error, as without a proxy.
        req.socket.destroy();
      }
    });
    req.pipe(upstream);
  }

  const server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    injected,
    retarget(url) {
      target = new URL(url);
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
