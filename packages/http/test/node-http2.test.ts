import {
  type ClientHttp2Session,
  createServer,
  type Http2Server,
  type Http2ServerResponse,
  connect as http2Connect,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { spyStore } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler, type ResponsePolicy } from '../src/index.js';
import { recordServerResponse, requestUrl } from '../src/node.js';
import { resolveRecordedHeaders } from '../src/recorded-headers.js';

// recordServerResponse on node:http2's compat response (Http2ServerResponse): the head it
// records is the one the client got (lower-case names, no pseudo-header), the body reaches
// the client, and the connection's socket (shared by every stream) is left alone.

const servers: Http2Server[] = [];
const sessions: ClientHttp2Session[] = [];
afterEach(async () => {
  for (const session of sessions.splice(0)) session.destroy();
  await Promise.all(
    servers
      .splice(0)
      .map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  );
});

type Head = (res: Http2ServerResponse) => unknown[];

/**
 * Ways an app sets headers: `setHeader`s, then the arguments it gives `writeHead`. No value
 * with whitespace at its edges: HTTP/2 makes such a field malformed (RFC 9113 8.2.1) and
 * node:http2's client drops it, where the recorder records it trimmed, as over HTTP/1.1.
 */
const heads: Record<string, Head> = {
  'setHeader, arrays, a writeHead object': (res) => {
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('ETag', '"x"');
    res.setHeader('Link', ['<a>; rel=x', '<b>; rel=y']);
    res.setHeader('Vary', 'a');
    return [201, { 'Cache-Control': 'no-store', VARY: ['b', 'c'], 'x-other': 1 }];
  },
  'a writeHead array of pairs after setHeader: every value kept': (res) => {
    res.setHeader('vary', 'a');
    res.setHeader('content-language', 'fr');
    return [
      200,
      [
        ['Vary', 'b'],
        ['vary', 'c'],
        ['Content-Type', 'text/plain'],
      ],
    ];
  },
  'a flat writeHead array': (res) => {
    res.setHeader('location', '/old');
    return [200, ['Content-Type', 'text/plain', 'Location', '/x']];
  },
  'setHeader only, no writeHead': (res) => {
    res.setHeader('content-disposition', 'attachment');
    res.setHeader('retry-after', 5);
    res.statusCode = 202;
    return [];
  },
};

const allowed = resolveRecordedHeaders(undefined);

/** The allowlisted headers a client got, as the recorder records them. */
function received(headers: IncomingHttpHeaders): [string, string][] {
  const pairs: [string, string][] = [];
  for (const [name, value] of Object.entries(headers))
    if (allowed.has(name) && value !== undefined)
      pairs.push([name, (Array.isArray(value) ? value : [String(value)]).join(', ')]);
  return pairs.sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

async function exchange(head: Head, isFinal?: ResponsePolicy) {
  const spied = spyStore(createMemoryStore());
  const idem = createIdempotencyHandler({
    store: spied.store,
    scope: 'global',
    onWarning: () => {},
    ...(isFinal ? { isFinal } : {}),
  });
  const server = createServer(async (req, res) => {
    const decision = await idem.begin({
      native: req as unknown as Request,
      method: req.method ?? 'GET',
      url: requestUrl(req.url ?? '/'),
      header: (name) => req.headers[name.toLowerCase()] as string | undefined,
      readBody: async () => ({ kind: 'none' }),
    });
    if (decision.action !== 'execute') {
      res.statusCode = 500;
      res.end(decision.action);
      return;
    }
    recordServerResponse(res as never, decision.recorder);
    // Not the connection's: it is shared by every stream of it.
    for (const socket of sockets) if (Object.hasOwn(socket, 'emit')) socketTouched = true;
    const args = head(res);
    if (args.length > 0) (res.writeHead as (...rest: unknown[]) => void)(...args);
    res.write('{"a":');
    res.end('1}');
  });
  const sockets: Socket[] = [];
  let socketTouched = false;
  server.on('connection', (socket: Socket) => sockets.push(socket));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = http2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  client.on('error', () => {});
  sessions.push(client);
  const answer = await new Promise<{ headers: IncomingHttpHeaders; body: string }>(
    (resolve, reject) => {
      const stream = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': 'k' });
      let headers: IncomingHttpHeaders = {};
      const parts: Buffer[] = [];
      stream.on('response', (h) => {
        headers = h;
      });
      stream.on('data', (chunk: Buffer) => parts.push(chunk));
      stream.on('end', () => resolve({ headers, body: Buffer.concat(parts).toString() }));
      stream.on('error', reject);
      stream.end();
    },
  );
  return { answer, completed: spied.completed, socketTouched };
}

describe('recordServerResponse on node:http2 compat responses', () => {
  for (const [name, head] of Object.entries(heads)) {
    it(`records the head the client got: ${name}`, async () => {
      const { answer, completed, socketTouched } = await exchange(head);
      expect(answer.body).toBe('{"a":1}');
      expect(socketTouched).toBe(false);
      expect(completed).toHaveLength(1);
      const recorded = completed[0]?.meta.headers as [string, string][];
      expect(recorded).toEqual(received(answer.headers));
      expect(recorded.some(([header]) => header.startsWith(':'))).toBe(false);
      expect(completed[0]?.meta.status).toBe(Number(answer.headers[':status']));
    });
  }

  it('a policy that reads the headers sees them without any pseudo-header', async () => {
    const seen: string[][] = [];
    const { answer, completed } = await exchange(heads['a flat writeHead array'] as Head, (r) => {
      seen.push([...r.headers.keys()]);
      return r.status < 300;
    });
    expect(answer.body).toBe('{"a":1}');
    expect(completed).toHaveLength(1);
    expect(seen[0]).toEqual(['content-type', 'location']);
  });
});
