import { connect } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review of the replayed reason phrase (wt/reasonrev) on Hono via
// @hono/node-server (the Web path, which records no statusText): first response and replay
// compared as bytes off a raw HTTP/1.1 socket.

/** One request on its own connection; the raw bytes of the response (closed after it). */
function rawPost(
  url: string,
  path: string,
  key: string,
  body = '{"a":1}',
  extra = '',
  version = '1.1',
): Promise<Buffer> {
  const { port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect(Number(port), '127.0.0.1');
    const parts: Buffer[] = [];
    const timer = setTimeout(() => socket.destroy(), 10_000);
    socket.on('data', (part: Buffer) => parts.push(part));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts));
    });
    socket.write(
      `POST ${path} HTTP/${version}\r\nHost: x\r\nConnection: close\r\nIdempotency-Key: ${key}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`,
    );
  });
}

/** The final status line's bytes (after any 1xx), without its CRLF. */
function statusLine(raw: Buffer): Buffer {
  let at = 0;
  while (/^HTTP\/1\.[01] 1\d\d /.test(raw.subarray(at, at + 13).toString('latin1')))
    at = raw.indexOf('\r\n\r\n', at) + 4;
  return raw.subarray(at, raw.indexOf('\r\n', at));
}

const lineText = (raw: Buffer) => statusLine(raw).toString('latin1');
const isReplay = (raw: Buffer) => /\r\nidempotent-replayed: true\r\n/i.test(raw.toString('latin1'));
/** The body after the head, chunked framing removed. */
function bodyOf(raw: Buffer): string {
  const text = raw.toString('latin1');
  const at = text.indexOf('\r\n\r\n');
  const rest = text.slice(at + 4);
  if (!/\r\ntransfer-encoding: chunked/i.test(text.slice(0, at))) return rest;
  let out = '';
  let i = 0;
  for (;;) {
    const eol = rest.indexOf('\r\n', i);
    const size = Number.parseInt(rest.slice(i, eol), 16);
    if (!(size > 0)) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    i = eol + 2 + size + 2;
  }
}

let runs = 0;
let serial = 0;
let server: ServerType;
let url = '';

beforeAll(async () => {
  const app = new Hono();
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/status-text', () => {
    runs++;
    return new Response(JSON.stringify({ id: runs }), {
      status: 201,
      statusText: 'Cr\u00e9\u00e9',
      headers: { 'content-type': 'application/json' },
    });
  });
  await new Promise<void>((resolve) => {
    server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
      url = `http://127.0.0.1:${info.port}`;
      resolve();
    });
  });
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

describe('reasonrev (Hono on @hono/node-server): the replayed status line', () => {
  it("a Response's statusText (which node-server does not send): first and replay agree, the handler once", async () => {
    const key = `hono-${++serial}`;
    const before = runs;
    const first = await rawPost(url, '/status-text', key);
    const replay = await rawPost(url, '/status-text', key);
    expect(lineText(first)).toBe('HTTP/1.1 201 Created');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
    expect(bodyOf(replay)).toBe(bodyOf(first));
    expect(runs - before).toBe(1);
    const other = await rawPost(url, '/status-text', key, '{"a":2}');
    expect(lineText(other)).toMatch(/^HTTP\/1\.1 422 /);
    expect(runs - before).toBe(1);
  });
});
