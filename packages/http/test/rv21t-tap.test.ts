import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import { connect as connectHttp2, createServer as createHttp2Server } from 'node:http2';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tappedInstead, tapRequestBodies } from '../src/node.js';

// rv21t: the tap shared by the ESM and CJS copies of @idem/http/node in one process (one
// subscription, one registry, taps one copy made read by the other), and what it leaves
// alone: requests without a key, methods no rule names, a Content-Length of 0. Real HTTP
// server on loopback.

const TAP = Symbol.for('idem.requestBodyTap');
const cjs = createRequire(import.meta.url)('../dist/node.cjs') as {
  tapRequestBodies: typeof tapRequestBodies;
  tappedInstead: typeof tappedInstead;
};

let server: Server;
let port = 0;
beforeAll(async () => {
  expect(cjs.tapRequestBodies).not.toBe(tapRequestBodies);
  tapRequestBodies({ headerName: 'X-Rv21-Esm', methods: ['PUT'], maxBodyBytes: 64 });
  cjs.tapRequestBodies({ headerName: 'X-Rv21-Cjs', methods: ['DELETE'], maxBodyBytes: 64 });
  server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const tapped = (req as unknown as Record<symbol, unknown>)[TAP] !== undefined;
      const ownPush = Object.hasOwn(req, 'push');
      // The other copy reads what this one's tap kept, and the reverse.
      const reader = req.headers['x-rv21-esm'] ? cjs.tappedInstead : tappedInstead;
      let body: ReturnType<typeof tappedInstead>;
      try {
        body = reader(req, 64, { kind: 'none' });
      } catch (error) {
        res.end(JSON.stringify({ error: String(error) }));
        return;
      }
      res.end(
        JSON.stringify({
          tapped,
          ownPush,
          kind: body.kind,
          bytes: body.kind === 'bytes' ? Buffer.from(body.bytes).toString() : undefined,
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

function exchange(method: string, headers: Record<string, string>, body: string) {
  return new Promise<Record<string, unknown>>((resolve, reject) => {
    const req = request(
      {
        port,
        host: '127.0.0.1',
        method,
        agent: false,
        // A DELETE from Node's client has no framing of its own: the length is said.
        headers: {
          'content-type': 'text/plain',
          'content-length': String(Buffer.byteLength(body)),
          ...headers,
        },
      },
      (res) => {
        let text = '';
        res.on('data', (c) => {
          text += c;
        });
        res.on('end', () => {
          try {
            resolve(JSON.parse(text) as Record<string, unknown>);
          } catch {
            reject(new Error(`${res.statusCode} ${text}`));
          }
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('rv21t http: ESM and CJS copies in one process', () => {
  it("each copy's rule taps, and either copy reads the other's tap", async () => {
    expect(await exchange('PUT', { 'x-rv21-esm': 'k' }, 'esm body')).toEqual({
      tapped: true,
      ownPush: true,
      kind: 'bytes',
      bytes: 'esm body',
    });
    expect(await exchange('DELETE', { 'x-rv21-cjs': 'k' }, 'cjs body')).toEqual({
      tapped: true,
      ownPush: true,
      kind: 'bytes',
      bytes: 'cjs body',
    });
  });

  it('left alone: no key, a method no rule with that header names, Content-Length: 0', async () => {
    const untouched = { tapped: false, ownPush: false, kind: 'none' };
    expect(await exchange('PUT', {}, 'abc')).toEqual(untouched);
    expect(await exchange('DELETE', { 'x-rv21-esm': 'k' }, 'abc')).toEqual(untouched);
    expect(await exchange('PUT', { 'x-rv21-esm': 'k', 'content-length': '0' }, '')).toEqual(
      untouched,
    );
  });
});

describe('rv21t http: HTTP/2', () => {
  /** One HTTP/2 request to a server that reads the body, then reports what the tap held. */
  async function h2Exchange(headers: Record<string, string>, body: string | undefined) {
    const h2 = createHttp2Server((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const stream = (req as unknown as { stream: Record<symbol, unknown> }).stream;
        const tapped = stream[TAP] !== undefined;
        // Read through the request, as the adapters do: the other copy too.
        const reader = req.headers['x-rv21-cjs'] ? cjs.tappedInstead : tappedInstead;
        let read: ReturnType<typeof tappedInstead> | string;
        try {
          read = reader(req as unknown as IncomingMessage, 64, { kind: 'none' });
        } catch (error) {
          read = (error as Error).name;
        }
        res.end(
          JSON.stringify({
            tapped,
            ownTap: (req as unknown as Record<symbol, unknown>)[TAP] !== undefined,
            body: Buffer.concat(chunks).toString(),
            kind: typeof read === 'string' ? read : read.kind,
            bytes:
              typeof read !== 'string' && read.kind === 'bytes'
                ? Buffer.from(read.bytes).toString()
                : null,
          }),
        );
      });
    });
    await new Promise<void>((resolve) => h2.listen(0, '127.0.0.1', resolve));
    const client = connectHttp2(`http://127.0.0.1:${(h2.address() as AddressInfo).port}`);
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        const stream = client.request(
          { ':path': '/', 'content-type': 'text/plain', ...headers },
          // A DELETE's body is ended with its HEADERS unless told otherwise.
          { endStream: body === undefined },
        );
        let text = '';
        stream.on('data', (c) => {
          text += c;
        });
        stream.on('end', () => resolve(text));
        stream.on('error', reject);
        if (body !== undefined) stream.end(body);
      });
      return JSON.parse(reply) as Record<string, unknown>;
    } finally {
      client.close();
      await new Promise((resolve) => h2.close(resolve));
    }
  }

  // Was: not tapped (Node 20 has no diagnostics channel for HTTP/2 streams). The stream is
  // tapped as its server opens it (`net.server.socket` names the server of each connection).
  it('a keyed HTTP/2 request with a body: its stream is tapped, read as ever, the bytes read back by either copy', async () => {
    expect(await h2Exchange({ ':method': 'PUT', 'x-rv21-esm': 'k' }, 'h2 body')).toEqual({
      tapped: true,
      ownTap: false,
      body: 'h2 body',
      kind: 'bytes',
      bytes: 'h2 body',
    });
    expect(await h2Exchange({ ':method': 'DELETE', 'x-rv21-cjs': 'k' }, 'cjs h2')).toEqual({
      tapped: true,
      ownTap: false,
      body: 'cjs h2',
      kind: 'bytes',
      bytes: 'cjs h2',
    });
  });

  it('HTTP/2 left alone: no key, a method no rule with that header names, no body (END_STREAM on HEADERS)', async () => {
    const untouched = { tapped: false, ownTap: false, kind: 'none', bytes: null };
    expect(await h2Exchange({ ':method': 'PUT' }, 'abc')).toEqual({ ...untouched, body: 'abc' });
    expect(await h2Exchange({ ':method': 'DELETE', 'x-rv21-esm': 'k' }, 'abc')).toEqual({
      ...untouched,
      body: 'abc',
    });
    expect(await h2Exchange({ ':method': 'PUT', 'x-rv21-esm': 'k' }, undefined)).toEqual({
      ...untouched,
      body: '',
    });
  });

  it('HTTP/2 past the limit: read as ever, BodyTooLargeError when the tap is asked', async () => {
    const reply = await h2Exchange({ ':method': 'PUT', 'x-rv21-esm': 'k' }, 'x'.repeat(65));
    expect(reply).toEqual({
      tapped: true,
      ownTap: false,
      body: 'x'.repeat(65),
      kind: 'BodyTooLargeError',
      bytes: null,
    });
  });
});
