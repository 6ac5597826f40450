import { type ServerType, serve } from '@hono/node-server';
import { rawBodyText, rawIsReplay, rawPost, rawStatusLine } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review of the replayed reason phrase (wt/reasonrev) on Hono via
// @hono/node-server (the Web path, which records no statusText): first response and replay
// compared as bytes off a raw HTTP/1.1 socket.

const statusLine = rawStatusLine;
const lineText = (raw: Buffer) => rawStatusLine(raw).toString('latin1');
const isReplay = rawIsReplay;
const bodyOf = rawBodyText;

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
