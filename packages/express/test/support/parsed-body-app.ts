/**
 * An Express app on loopback with body parsers mounted before the middleware (the tests of
 * bodies that a parser decoded first): a counting 201 route on the given paths, an error
 * handler answering 500 with the error's name, and a raw POST helper.
 */
import type { IncomingMessage, Server } from 'node:http';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import express from 'express';
import { idempotency } from '../../src/index.js';

export interface Answer {
  status: number;
  body: string;
  replayed: boolean;
}

export interface ParsedBodyApp {
  /** Runs of the route so far. */
  readonly runs: number;
  /** Errors the error handler got, in order. */
  readonly errors: unknown[];
  /** POSTs `body` as it is, with its Content-Length. */
  post(path: string, key: string, body: Buffer, type: string): Promise<Answer>;
  close(): Promise<void>;
}

/** A parser's `verify` that keeps the bytes as `req.rawBody` (as NestJS's rawBody option). */
export const keepRawBody = (req: IncomingMessage, _res: unknown, buf: Buffer): void => {
  (req as unknown as { rawBody: Buffer }).rawBody = Buffer.from(buf);
};

export async function startParsedBodyApp(
  mountParsers: (app: express.Express) => void,
  paths: string[],
): Promise<ParsedBodyApp> {
  const app = express();
  let runs = 0;
  const errors: unknown[] = [];
  mountParsers(app);
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post(paths, (_req, res) => {
    runs++;
    res.status(201).json({ run: runs });
  });
  app.use(
    (error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      errors.push(error);
      res.status(500).json({ name: error.name, message: error.message });
    },
  );
  const server: Server = app.listen(0, '127.0.0.1');
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const { port } = server.address() as AddressInfo;
  const post = (path: string, key: string, body: Buffer, type: string): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path,
          agent: false,
          headers: {
            'content-type': type,
            'idempotency-key': key,
            'content-length': String(body.length),
          },
        },
        (res: IncomingMessage) => {
          const parts: Buffer[] = [];
          res.on('data', (chunk: Buffer) => parts.push(chunk));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              body: Buffer.concat(parts).toString(),
              replayed: res.headers['idempotent-replayed'] === 'true',
            }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  return {
    get runs() {
      return runs;
    },
    errors,
    post,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
