import { createServer as createH2Server, type IncomingHttpHeaders } from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type App,
  closeAll,
  listenLoopback,
  post,
  recordedHandler,
  session,
} from './support/h2c.js';

// A header value with a space or a tab at either end is malformed in HTTP/2 (RFC 9113,
// 8.2.1): node:http2's client drops the field. The recorder left it in, trimmed, so a replay
// carried a header the first client never saw. The replay's head now equals the first one.

afterEach(closeAll);

async function serve(app: App) {
  const { handle, runs } = recordedHandler(app, {
    // The headers the apps set are recorded (Set-Cookie never is, so it is not used here).
    recordedHeaders: ['x-lead', 'x-trail', 'x-tabs', 'x-blank', 'x-inner', 'x-list', 'x-set'],
  });
  const server = createH2Server((req, res) => void handle(req as never, res as never));
  const client = session(await listenLoopback(server));
  return { client, runs };
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
