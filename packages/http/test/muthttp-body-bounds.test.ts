import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BodyTooLargeError,
  bodyFromBytes,
  bodyFromParsed,
  createIdempotencyHandler,
  PROBLEM_TYPES,
  peekBody,
  readBodyLimited,
} from '../src/index.js';

// The body limit is exact (README "What happens to a request", step 3: larger than
// `maxBodyBytes` → 413): a body of `maxBodyBytes` bytes is read, one byte more is refused, on
// every reader a body goes through (the declared Content-Length, a Node stream, peekBody
// while the body still comes in, a body a parser already made). Mutation audit (muthttp):
// each of these limits could be off by one, or skipped, with every other test passing.

const LIMIT = 8;

let server: Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** A loopback server whose handler gives `read(req)`'s outcome ('ok:<body>' or 'too large'). */
async function serve(read: (req: IncomingMessage) => Promise<Uint8Array>): Promise<number> {
  server = createServer(async (req, res) => {
    try {
      const body = await read(req);
      res.end(`ok:${Buffer.from(body).toString('utf8')}`);
    } catch (error) {
      res.setHeader('connection', 'close');
      res.end(error instanceof BodyTooLargeError ? 'too large' : `error:${String(error)}`);
    }
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** Sends a chunked POST whose body is `parts`, one chunk each, 20 ms apart; resolves with the answer's body. */
function sendChunked(port: number, parts: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const match = /(ok:[^\r\n]*|too large|error:[^\r\n]*)$/.exec(text);
      if (match && text.includes('\r\n\r\n')) {
        socket.destroy();
        resolve(text.slice(text.indexOf('\r\n\r\n') + 4).replace(/^[0-9a-f]+\r\n/, ''));
      }
    });
    socket.on('error', reject);
    socket.on('connect', async () => {
      socket.write('POST /orders HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
      for (const part of parts) {
        await new Promise((r) => setTimeout(r, 20));
        if (socket.destroyed) return;
        socket.write(`${Buffer.byteLength(part).toString(16)}\r\n${part}\r\n`);
      }
      if (!socket.destroyed) socket.write('0\r\n\r\n');
    });
  });
}

const answerBody = (text: string) => text.split('\r\n')[0];

describe('readBodyLimited over a Node request (an async iterable)', () => {
  it('reads a body of exactly the limit and refuses one byte more', async () => {
    const port = await serve((req) => readBodyLimited(req, LIMIT));
    expect(answerBody(await sendChunked(port, ['1234', '5678']))).toBe('ok:12345678');
    expect(answerBody(await sendChunked(port, ['1234', '56789']))).toBe('too large');
  });
});

describe('peekBody while the body still comes in', () => {
  it('reads a body of exactly the limit and refuses one byte more', async () => {
    const port = await serve((req) => peekBody(req, LIMIT));
    expect(answerBody(await sendChunked(port, ['1234', '5678']))).toBe('ok:12345678');
    expect(answerBody(await sendChunked(port, ['1234', '56789']))).toBe('too large');
  });
});

describe('a body a parser already made (bodyFromParsed)', () => {
  it('takes bytes and text of exactly the limit and refuses one byte more', () => {
    const fits = new TextEncoder().encode('12345678');
    expect(bodyFromParsed(fits, 'application/octet-stream', LIMIT)).toEqual(
      bodyFromBytes(fits, 'application/octet-stream'),
    );
    expect(bodyFromParsed('12345678', 'text/plain', LIMIT)).toEqual(
      bodyFromBytes(fits, 'text/plain'),
    );
    expect(() =>
      bodyFromParsed(new TextEncoder().encode('123456789'), 'application/octet-stream', LIMIT),
    ).toThrow(BodyTooLargeError);
    expect(() => bodyFromParsed('123456789', 'text/plain', LIMIT)).toThrow(BodyTooLargeError);
    // Multi-byte text is measured in bytes: 4 × 'é' is 8 bytes, 'é' × 4 + 'a' is 9.
    expect(() => bodyFromParsed('éééé', 'text/plain', LIMIT)).not.toThrow();
    expect(() => bodyFromParsed('ééééa', 'text/plain', LIMIT)).toThrow(BodyTooLargeError);
  });
});

describe('a declared Content-Length past maxBodyBytes', () => {
  it('is answered 413 before the body is read, by one byte; one of the limit is read', async () => {
    const handler = createIdempotencyHandler<null>({
      store: createMemoryStore(),
      scope: 'global',
      maxBodyBytes: LIMIT,
    });
    const begin = async (declared: number) => {
      let reads = 0;
      const decision = await handler.begin({
        native: null,
        method: 'POST',
        url: '/orders',
        header: (name) =>
          name === 'idempotency-key'
            ? `k-${declared}`
            : name === 'content-length'
              ? String(declared)
              : name === 'content-type'
                ? 'text/plain'
                : undefined,
        readBody: async (limit) => {
          reads++;
          return bodyFromBytes(new Uint8Array(Math.min(declared, limit)).fill(97), 'text/plain');
        },
      });
      return { decision, reads };
    };
    const over = await begin(LIMIT + 1);
    expect(over.reads).toBe(0);
    expect(over.decision.action).toBe('respond');
    if (over.decision.action !== 'respond') return;
    expect(over.decision.response.status).toBe(413);
    expect(((await over.decision.response.json()) as { type: string }).type).toBe(
      PROBLEM_TYPES.bodyTooLarge,
    );
    const fits = await begin(LIMIT);
    expect(fits.reads).toBe(1);
    expect(fits.decision.action).toBe('execute');
    if (fits.decision.action === 'execute') await fits.decision.recorder.fail(new Error('test'));
  });
});
