import { once } from 'node:events';
import { connect as connectHttp2 } from 'node:http2';
import { Readable } from 'node:stream';
import { rawBodyText, rawIsReplay, rawPost, rawStatusLine } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review of the replayed reason phrase (wt/reasonrev) on Fastify 5: first
// response and replay compared as bytes off a raw HTTP/1.1 socket, and over HTTP/2 (h2c)
// from a second Fastify on the same store.

const statusLine = rawStatusLine;
const lineText = (raw: Buffer) => rawStatusLine(raw).toString('latin1');
const isReplay = rawIsReplay;
const bodyOf = rawBodyText;

let runs = 0;
let serial = 0;
let url = '';
let h2url = '';
const apps: FastifyInstance[] = [];

function routes(fastify: FastifyInstance): void {
  fastify.post('/latin', async (_request, reply) => {
    runs++;
    reply.raw.statusMessage = 'Cr\u00e9\u00e9 \u00ff';
    return reply.code(201).send({ id: runs });
  });
  fastify.post('/stream', async (_request, reply) => {
    runs++;
    reply.raw.statusMessage = 'Flux \u00e9\t';
    return reply
      .code(202)
      .type('text/plain')
      .send(Readable.from(['a', 'b', 'c']));
  });
  fastify.post('/untyped', async (_request, reply) => {
    // A body without a Content-Type: replayed as a Web Response (statusText).
    runs++;
    reply.raw.writeHead(201, 'Sans type \u00e0', { 'x-run': String(runs) });
    reply.raw.end('raw body');
    return reply.hijack();
  });
  fastify.post('/empty', async (_request, reply) => {
    runs++;
    reply.raw.statusMessage = 'Rien';
    return reply.code(204).send();
  });
  fastify.post('/bad', async (request, reply) => {
    runs++;
    if (request.headers['x-good'] === '1') return reply.code(201).send({ run: runs });
    // Node refuses the head (and keeps the phrase): the app answers 500 with a good one.
    // (Left in statusMessage, Fastify's own error handler throws it again, with or without
    // idem: Fastify's behaviour, not idem's.)
    try {
      reply.raw.writeHead(201, 'Made\r\nX-Injected: 1');
    } catch {
      reply.raw.statusMessage = 'Internal Server Error';
      return reply.code(500).send({ refused: true });
    }
    return reply.send({ never: true });
  });
}

beforeAll(async () => {
  const store = createMemoryStore();
  for (const http2 of [false, true]) {
    const app = (http2 ? Fastify({ http2: true }) : Fastify()) as unknown as FastifyInstance;
    await app.register(idempotency, { store, scope: 'global', onWarning: () => {} });
    routes(app);
    apps.push(app);
    const at = await app.listen({ port: 0, host: '127.0.0.1' });
    if (http2) h2url = at;
    else url = at;
  }
});
afterAll(() => Promise.all(apps.map((app) => app.close())));

async function h2post(
  key: string,
  path: string,
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const session = connectHttp2(h2url);
  session.on('error', () => {});
  try {
    const stream = session.request({
      ':method': 'POST',
      ':path': path,
      'idempotency-key': key,
      'content-type': 'application/json',
    });
    stream.end('{"a":1}');
    const [headers] = (await once(stream, 'response')) as [Record<string, unknown>];
    const parts: Buffer[] = [];
    stream.on('data', (part: Buffer) => parts.push(part));
    if (!stream.closed) await once(stream, 'close');
    return { status: Number(headers[':status']), headers, body: Buffer.concat(parts).toString() };
  } finally {
    session.close();
  }
}

async function twice(path: string) {
  const key = `fy-${++serial}`;
  const before = runs;
  const first = await rawPost(url, path, key);
  const replay = await rawPost(url, path, key);
  return { key, first, replay, ran: runs - before };
}

describe('reasonrev (Fastify 5): the replayed status line', () => {
  it('a Latin-1 reply.raw.statusMessage, replayed whole (reply.send of the bytes): the same bytes', async () => {
    const { first, replay, ran } = await twice('/latin');
    expect(lineText(first)).toBe('HTTP/1.1 201 Cr\u00e9\u00e9 \u00ff');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
    expect(bodyOf(replay)).toBe(bodyOf(first));
    expect(ran).toBe(1);
  });

  it('a stream replayed as a Web Response (statusText): Latin-1 and a tab, the same bytes', async () => {
    const { first, replay, ran } = await twice('/stream');
    expect(lineText(first)).toBe('HTTP/1.1 202 Flux \u00e9\t');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
    expect(bodyOf(replay)).toBe('abc');
    expect(ran).toBe(1);
  });

  it('a body without a Content-Type written on reply.raw (a Response replay): the same bytes', async () => {
    const { first, replay, ran } = await twice('/untyped');
    expect(lineText(first)).toBe('HTTP/1.1 201 Sans type \u00e0');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
    expect(bodyOf(replay)).toBe('raw body');
    expect(ran).toBe(1);
  });

  it('a 204 with its own phrase: the same bytes', async () => {
    const { first, replay } = await twice('/empty');
    expect(lineText(first)).toBe('HTTP/1.1 204 Rien');
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
  });

  it('another body under the same key: 422, the handler not run again', async () => {
    const { key } = await twice('/latin');
    const before = runs;
    const other = await rawPost(url, '/latin', key, '{"a":2}');
    expect(lineText(other)).toMatch(/^HTTP\/1\.1 422 /);
    expect(runs).toBe(before);
  });

  it('recorded over HTTP/1.1, replayed over HTTP/2 (and back): no warning, no crash', async () => {
    const seen: string[] = [];
    const onWarning = (warning: Error) => void seen.push(warning.message);
    process.on('warning', onWarning);
    try {
      for (const path of ['/latin', '/stream']) {
        const key = `fy-${++serial}`;
        const before = runs;
        const first = await rawPost(url, path, key);
        const h2 = await h2post(key, path);
        expect(h2.status).toBe(path === '/latin' ? 201 : 202);
        expect(h2.headers['idempotent-replayed']).toBe('true');
        expect(h2.body).toBe(bodyOf(first));
        const again = await rawPost(url, path, key);
        expect(statusLine(again).equals(statusLine(first))).toBe(true);
        expect(runs - before).toBe(1);
      }
      await new Promise((resolve) => setImmediate(resolve));
      expect(seen.filter((message) => /status ?message/i.test(message))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a phrase Node refuses (CR/LF): no header injected, the key released, a retry runs', async () => {
    const key = `fy-${++serial}`;
    const before = runs;
    const first = await rawPost(url, '/bad', key);
    expect(first.toString('latin1')).not.toMatch(/\r\nx-injected/i);
    expect(lineText(first)).toBe('HTTP/1.1 500 Internal Server Error');
    const retry = await rawPost(url, '/bad', key, undefined, 'X-Good: 1\r\n');
    expect(lineText(retry)).toBe('HTTP/1.1 201 Created');
    expect(isReplay(retry)).toBe(false);
    expect(runs - before).toBe(2);
  });
});
