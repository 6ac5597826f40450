import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type ClientHttp2Session,
  createServer as createH2Server,
  connect as http2Connect,
  type IncomingHttpHeaders,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { createIdempotencyHandler } from '../src/index.js';
import {
  headerValue,
  nodeRequestBody,
  recordServerResponse,
  requestUrl,
  sendDecisionResponse,
} from '../src/node.js';

// A header value with a space or a tab at either end is malformed in HTTP/2 (RFC 9113,
// 8.2.1): node:http2's client drops the field. The recorder left it in, trimmed, so a replay
// carried a header the first client never saw. The replay's head now equals the first one.

type App = (req: IncomingMessage, res: ServerResponse) => void;

const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function serve(app: App) {
  const idem = createIdempotencyHandler<IncomingMessage>({
    store: createMemoryStore(),
    scope: 'global',
    // The headers the apps set are recorded (Set-Cookie never is, so it is not used here).
    recordedHeaders: ['x-lead', 'x-trail', 'x-tabs', 'x-blank', 'x-inner', 'x-list', 'x-set'],
    onWarning: () => {},
  });
  let runs = 0;
  const server = createH2Server(async (request, response) => {
    const req = request as unknown as IncomingMessage;
    const res = response as unknown as ServerResponse;
    const decision = await idem.begin({
      native: req,
      method: req.method ?? 'GET',
      url: requestUrl(req.url ?? '/'),
      header: (name) => headerValue(req.headers, name),
      readBody: (limit) => nodeRequestBody(req, undefined, limit),
    });
    if (decision.action === 'pass') {
      res.statusCode = 500;
      res.end('pass');
      return;
    }
    if (decision.action === 'respond') return sendDecisionResponse(res, decision);
    runs++;
    recordServerResponse(res, decision.recorder);
    app(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const client: ClientHttp2Session = http2Connect(
    `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
  );
  client.on('error', () => {});
  closers.push(() => {
    client.destroy();
  });
  return { client, runs: () => runs };
}

function post(client: ClientHttp2Session, key: string) {
  return new Promise<{ headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const stream = client.request({ ':method': 'POST', ':path': '/', 'idempotency-key': key });
    let headers: IncomingHttpHeaders = {};
    const parts: Buffer[] = [];
    stream.on('response', (h) => {
      headers = h;
    });
    stream.on('data', (chunk: Buffer) => parts.push(chunk));
    stream.on('end', () => resolve({ headers, body: Buffer.concat(parts).toString() }));
    stream.on('error', reject);
    stream.end('b');
  });
}

/** The head as the client got it, without what differs between a first answer and a replay. */
function head(headers: IncomingHttpHeaders): Record<string, unknown> {
  const { date: _date, 'idempotent-replayed': _replayed, ...rest } = headers;
  return { ...rest };
}

const cases: [string, App][] = [
  [
    'setHeader',
    (_req, res) => {
      res.setHeader('x-lead', ' lead');
      res.setHeader('x-trail', 'trail ');
      res.setHeader('x-tabs', '\tboth\t');
      res.setHeader('x-blank', '  ');
      res.setHeader('x-inner', 'in ner');
      res.setHeader('x-list', ['a', ' b', 'c']);
      res.end('ok');
    },
  ],
  [
    'writeHead with an object',
    (_req, res) => {
      res.writeHead(200, { 'x-lead': ' lead', 'x-trail': 'trail ', 'x-inner': 'in ner' });
      res.end('ok');
    },
  ],
  [
    'writeHead with an array',
    (_req, res) => {
      res.setHeader('x-set', 'kept');
      res.writeHead(200, ['x-lead', ' lead', 'x-list', 'a', 'x-list', 'b ', 'x-inner', 'in ner']);
      res.end('ok');
    },
  ],
];

describe('HTTP/2: header values with a space or a tab at an end', () => {
  for (const [name, app] of cases) {
    it(`${name}: the replay's head equals the head the first client received`, async () => {
      const h = await serve(app);
      const first = await post(h.client, 'k');
      const replay = await post(h.client, 'k');
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body).toBe(first.body);
      expect(head(first.headers)['x-inner']).toBe('in ner');
      expect(head(first.headers)['x-lead']).toBeUndefined();
      expect(head(replay.headers)).toEqual(head(first.headers));
      expect(h.runs()).toBe(1);
    });
  }
});
