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
  it('a keyed HTTP/2 request with a body is not tapped (no channel for it), read as ever', async () => {
    const h2 = createHttp2Server((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const tapped = (req as unknown as Record<symbol, unknown>)[TAP] !== undefined;
        res.end(JSON.stringify({ tapped, body: Buffer.concat(chunks).toString() }));
      });
    });
    await new Promise<void>((resolve) => h2.listen(0, '127.0.0.1', resolve));
    const client = connectHttp2(`http://127.0.0.1:${(h2.address() as AddressInfo).port}`);
    try {
      const reply = await new Promise<string>((resolve, reject) => {
        const stream = client.request({
          ':method': 'PUT',
          ':path': '/',
          'x-rv21-esm': 'k',
          'content-type': 'text/plain',
        });
        let text = '';
        stream.on('data', (c) => {
          text += c;
        });
        stream.on('end', () => resolve(text));
        stream.on('error', reject);
        stream.end('h2 body');
      });
      expect(JSON.parse(reply)).toEqual({ tapped: false, body: 'h2 body' });
    } finally {
      client.close();
      await new Promise((resolve) => h2.close(resolve));
    }
  });
});
