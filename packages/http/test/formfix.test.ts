/**
 * formfix: nodeRequestBody fingerprints the bytes kept as req.rawBody (a Buffer) first, for
 * every type; refuses an object parsed under a Content-Type that is not JSON (unless the
 * request declares no body: a parser's `{}`); refuses parsed text shorter or longer in UTF-8
 * than the body sent (a BOM stripped). Real Node requests on loopback.
 */
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { BodyAlreadyReadError, type RequestBody } from '../src/index.js';
import { nodeRequestBody } from '../src/node.js';

const LIMIT = 1_048_576;

/** Runs `inspect` on a real IncomingMessage whose body (if any) was read whole first. */
async function onRequest(
  body: Buffer | undefined,
  headers: Record<string, string>,
  inspect: (req: IncomingMessage & { rawBody?: unknown; drained?: Buffer }) => Promise<RequestBody>,
): Promise<RequestBody | Error> {
  let result: Promise<RequestBody> | undefined;
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (chunk: Buffer) => parts.push(chunk));
    req.on('end', () => {
      (req as IncomingMessage & { drained?: Buffer }).drained = Buffer.concat(parts);
      result = inspect(req);
      result.then(
        () => res.end('ok'),
        () => res.end('error'),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        agent: false,
        headers:
          body === undefined ? headers : { 'content-length': String(body.length), ...headers },
      },
      (res) => {
        res.resume();
        res.on('end', resolve);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return (result as Promise<RequestBody>).catch((error: Error) => error);
}

const text = (body: RequestBody | Error) =>
  body instanceof Error
    ? body
    : body.kind === 'bytes'
      ? `bytes:${Buffer.from(body.bytes).toString()}`
      : body.kind === 'json'
        ? `json:${JSON.stringify(body.value)}`
        : body.kind;

describe('formfix: nodeRequestBody', () => {
  it('req.rawBody (a Buffer) is fingerprinted first, a form and JSON alike', async () => {
    const form = await onRequest(
      Buffer.from('amount=10&=1'),
      { 'content-type': 'application/x-www-form-urlencoded' },
      (req) => {
        req.rawBody = req.drained;
        return nodeRequestBody(req, { amount: '10' }, LIMIT);
      },
    );
    expect(text(form)).toBe('bytes:amount=10&=1');
    // A repeated member name: fingerprinted by its bytes (not the parsed { amount: 2 }).
    const json = await onRequest(
      Buffer.from('{"amount":1,"amount":2}'),
      { 'content-type': 'application/json' },
      (req) => {
        req.rawBody = req.drained;
        return nodeRequestBody(req, { amount: 2 }, LIMIT);
      },
    );
    expect(text(json)).toBe('bytes:{"amount":1,"amount":2}');
  });

  it('a parsed form without its bytes is refused, whatever the non-JSON type; a JSON value is taken', async () => {
    for (const type of ['application/x-www-form-urlencoded', 'text/plain', 'application/x-form']) {
      const body = await onRequest(Buffer.from('a=1'), { 'content-type': type }, (req) =>
        nodeRequestBody(req, { a: '1' }, LIMIT),
      );
      expect(body, type).toBeInstanceOf(BodyAlreadyReadError);
      expect((body as Error).message).toMatch(/parsed into names and values/);
    }
    const json = await onRequest(
      Buffer.from('{"b":2,"a":1}'),
      { 'content-type': 'application/json' },
      (req) => nodeRequestBody(req, { b: 2, a: 1 }, LIMIT),
    );
    expect(text(json)).toBe('json:{"b":2,"a":1}');
  });

  it("a request that declares no body: a parser's {} is taken as before, not refused", async () => {
    const body = await onRequest(
      Buffer.alloc(0),
      { 'content-type': 'application/x-www-form-urlencoded' },
      (req) => nodeRequestBody(req, {}, LIMIT),
    );
    expect(text(body)).toBe('json:{}');
  });

  it('parsed text whose UTF-8 length is not the Content-Length (a BOM stripped) is refused; a compressed one is not measured', async () => {
    const stripped = await onRequest(
      Buffer.from('\uFEFFrefund 10'),
      { 'content-type': 'text/plain' },
      (req) => nodeRequestBody(req, 'refund 10', LIMIT),
    );
    expect(stripped).toBeInstanceOf(BodyAlreadyReadError);
    expect((stripped as Error).message).toMatch(/leading BOM stripped/);
    const same = await onRequest(
      Buffer.from('refund 10'),
      { 'content-type': 'text/plain' },
      (req) => nodeRequestBody(req, 'refund 10', LIMIT),
    );
    expect(text(same)).toBe('bytes:refund 10');
    const gzipped = await onRequest(
      Buffer.from('xxxxxxxxxxxxxxxxxxxx'),
      { 'content-type': 'text/plain', 'content-encoding': 'gzip' },
      (req) => nodeRequestBody(req, 'refund 10', LIMIT),
    );
    expect(text(gzipped)).toBe('bytes:refund 10');
    // A JSON type is not measured: a JSON parser's string is not the body's text.
    const json = await onRequest(
      Buffer.from('"refund"'),
      { 'content-type': 'application/json' },
      (req) => nodeRequestBody(req, 'refund', LIMIT),
    );
    expect(json).not.toBeInstanceOf(Error);
  });
});
