/**
 * An HTTP proxy in front of DynamoDB Local that fails chosen operations (by X-Amz-Target) a
 * chosen number of times, for the tests of ensureTable() under faults.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type Fault =
  /** Never answers (the store's requestDeadlineMs ends it). */
  | 'silent'
  /** Answers 500 InternalServerError. */
  | '500'
  /** Answers 400 ThrottlingException. */
  | 'throttle'
  /** Answers 400 ValidationException: a refusal, never retried. */
  | 'invalid'
  /** Answers 429 with a plain-text body (a proxy on the way that throttles). */
  | '429-plain'
  /** Forwards the request to DynamoDB Local, then drops the connection instead of answering. */
  | 'lose-answer'
  /** Forwards the request, and holds DynamoDB Local's answer this many ms. */
  | { delayMs: number }
  /** Answers 200 with this JSON body instead of forwarding (a table state Local never shows). */
  | { answer: unknown }
  /** Answers 400 with this exception name (e.g. AccessDeniedException). */
  | { error: string };

export interface OperationFaultProxy {
  endpoint: string;
  /** Operation (DescribeTable, CreateTable, ...) -> faults to apply to its next requests. */
  faults: Map<string, Fault[]>;
  /** Operations received, in order. */
  seen: string[];
  /**
   * Holds the next `count` requests of `operation` until all of them arrived, then forwards
   * them together (callers that all looked before any of them acted).
   */
  gather(operation: string, count: number): void;
  close(): Promise<void>;
}

export async function startOperationFaultProxy(
  upstreamEndpoint: string,
): Promise<OperationFaultProxy> {
  const upstream = new URL(upstreamEndpoint);
  const faults = new Map<string, Fault[]>();
  const seen: string[] = [];
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const gathering = new Map<string, { count: number; held: Array<() => void> }>();
  const answer = (res: ServerResponse, status: number, type: string) => {
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0' });
    res.end(JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${type}`, message: type }));
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const operation = String(req.headers['x-amz-target'] ?? '').split('.')[1] ?? '';
      seen.push(operation);
      const fault = faults.get(operation)?.shift();
      if (fault === 'silent') return;
      if (fault === '500') return answer(res, 500, 'InternalServerError');
      if (fault === 'throttle') return answer(res, 400, 'ThrottlingException');
      if (fault === 'invalid') return answer(res, 400, 'ValidationException');
      if (fault === '429-plain') {
        res.writeHead(429, { 'content-type': 'text/plain' });
        res.end('Too Many Requests');
        return;
      }
      if (typeof fault === 'object' && 'error' in fault) return answer(res, 400, fault.error);
      if (typeof fault === 'object' && 'answer' in fault) {
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
        res.end(JSON.stringify(fault.answer));
        return;
      }
      const forward = () => {
        const out = request(
          {
            host: upstream.hostname,
            port: upstream.port,
            method: req.method,
            path: req.url,
            headers: req.headers,
          },
          (up) => {
            if (fault === 'lose-answer') {
              up.resume();
              up.once('end', () => req.socket.destroy());
              return;
            }
            const pass = () => {
              res.writeHead(up.statusCode ?? 502, up.headers);
              up.pipe(res);
            };
            if (typeof fault !== 'object') return pass();
            const timer = setTimeout(() => {
              timers.delete(timer);
              pass();
            }, fault.delayMs);
            timers.add(timer);
          },
        );
        out.on('error', () => req.socket.destroy());
        out.end(Buffer.concat(chunks));
      };
      const gather = gathering.get(operation);
      if (!gather) return forward();
      gather.held.push(forward);
      if (gather.held.length < gather.count) return;
      gathering.delete(operation);
      for (const go of gather.held) go();
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('proxy has no port');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    faults,
    seen,
    gather(operation, count) {
      gathering.set(operation, { count, held: [] });
    },
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const socket of sockets) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}
