import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BodyAlreadyReadError, BodyTooLargeError } from '../src/index.js';
import { nodeRequestBody } from '../src/node.js';

// nodeRequestBody (`@idem/http/node`, README "For framework adapters"): bytes a reader kept as
// `req.rawBody` count against the limit as any body, and are refused when they are not as
// many as the Content-Length of an uncompressed body says (a `verify` that keeps a part);
// bytes peeked for one limit are measured again against another. Mutation audit (muthttp):
// each check could be dropped with every test of this package passing.

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

/** A server whose handler answers what `fingerprintBody(req)` did: 'ok', 'too large' or 'already read'. */
async function serve(fingerprintBody: (req: IncomingMessage) => Promise<unknown>): Promise<number> {
  server = createServer(async (req, res) => {
    try {
      await fingerprintBody(req);
      res.end('ok');
    } catch (error) {
      res.end(
        error instanceof BodyTooLargeError
          ? 'too large'
          : error instanceof BodyAlreadyReadError
            ? 'already read'
            : `error: ${String(error)}`,
      );
    }
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

function post(port: number, body: string, type = 'application/json'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        port,
        host: '127.0.0.1',
        method: 'POST',
        path: '/',
        headers: { 'content-type': type, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve(text));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A JSON parser before the middleware that keeps `keep(bytes)` as req.rawBody. */
function parsedKeeping(limit: number, keep: (bytes: Buffer) => Buffer) {
  return async (req: IncomingMessage) => {
    const bytes = await readAll(req);
    (req as IncomingMessage & { rawBody?: Buffer }).rawBody = keep(bytes);
    return nodeRequestBody(req, JSON.parse(bytes.toString('utf8')), limit);
  };
}

describe('bytes kept as req.rawBody', () => {
  it('past the limit are refused (413), of the limit taken', async () => {
    const port = await serve(parsedKeeping(12, (bytes) => bytes));
    expect(await post(port, '{"a":"12345"}')).toBe('too large'); // 13 bytes
    expect(await post(port, '{"a":"1234"}')).toBe('ok'); // 12 bytes
  });

  it('fewer than the Content-Length says are refused: a part never stands for the body', async () => {
    const port = await serve(parsedKeeping(1024, (bytes) => bytes.subarray(0, 8)));
    expect(await post(port, '{"a":"12345"}')).toBe('already read');
  });
});

describe('a body peeked before under a larger limit', () => {
  it('is measured again against a smaller one', async () => {
    const port = await serve(async (req) => {
      await nodeRequestBody(req, undefined, 1024);
      return nodeRequestBody(req, undefined, 8);
    });
    expect(await post(port, '0123456789', 'text/plain')).toBe('too large');
    expect(await post(port, '01234567', 'text/plain')).toBe('ok');
  });
});
