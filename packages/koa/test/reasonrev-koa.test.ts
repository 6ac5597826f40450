import {
  listening,
  type RunningApp,
  rawBodyText,
  rawIsReplay,
  rawPost,
  rawStatusLine,
} from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import { bodyParser } from '@koa/bodyparser';
import Koa from 'koa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Adversarial review of the replayed reason phrase (wt/reasonrev) on Koa: first response
// and replay compared as bytes off a raw HTTP/1.1 socket.

const statusLine = rawStatusLine;
const lineText = (raw: Buffer) => rawStatusLine(raw).toString('latin1');
const isReplay = rawIsReplay;
const bodyOf = rawBodyText;

let runs = 0;
let serial = 0;
let running: RunningApp;

beforeAll(async () => {
  const app = new Koa();
  app.silent = true;
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.use(bodyParser());
  app.use((ctx) => {
    runs++;
    if (ctx.path === '/latin') {
      ctx.status = 201;
      ctx.message = 'Cr\u00e9\u00e9 \u00ff\t';
      ctx.body = { id: runs };
    } else if (ctx.path === '/order') {
      // Koa's status setter puts the usual phrase back: Node sends `Created`.
      ctx.message = 'Lost';
      ctx.status = 201;
      ctx.body = { id: runs };
    } else if (ctx.path === '/empty') {
      ctx.status = 204;
      ctx.message = 'Rien \u00e0 dire';
    } else if (ctx.path === '/bad') {
      ctx.status = 201;
      if (ctx.get('x-good') !== '1') ctx.message = 'Made\r\nX-Injected: 1';
      ctx.body = { run: runs };
    }
  });
  running = await listening(app.listen(0, '127.0.0.1'));
});
afterAll(() => running.close());

async function twice(path: string) {
  const key = `koa-${++serial}`;
  const before = runs;
  const first = await rawPost(running.url, path, key);
  const replay = await rawPost(running.url, path, key);
  return { key, first, replay, ran: runs - before };
}

describe('reasonrev (Koa): the replayed status line', () => {
  it('a Latin-1 ctx.message with a tab: the same bytes, the handler once', async () => {
    const { first, replay, ran } = await twice('/latin');
    expect(lineText(first)).toBe('HTTP/1.1 201 Cr\u00e9\u00e9 \u00ff\t');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
    expect(bodyOf(replay)).toBe(bodyOf(first));
    expect(ran).toBe(1);
  });

  it('ctx.message set before ctx.status (Koa resets it): Created both times', async () => {
    const { first, replay } = await twice('/order');
    expect(lineText(first)).toBe('HTTP/1.1 201 Created');
    expect(lineText(replay)).toBe('HTTP/1.1 201 Created');
  });

  it('a 204 with its own Latin-1 phrase: the same bytes', async () => {
    const { first, replay } = await twice('/empty');
    expect(lineText(first)).toBe('HTTP/1.1 204 Rien \u00e0 dire');
    expect(isReplay(replay)).toBe(true);
    expect(statusLine(replay).equals(statusLine(first))).toBe(true);
  });

  it('another body under the same key: 422, the handler not run again', async () => {
    const { key } = await twice('/latin');
    const before = runs;
    const other = await rawPost(running.url, '/latin', key, '{"a":2}');
    expect(lineText(other)).toMatch(/^HTTP\/1\.1 422 /);
    expect(runs).toBe(before);
  });

  it("a phrase Node refuses (CR/LF): Koa's 500, no header injected, the key released", async () => {
    const key = `koa-${++serial}`;
    const before = runs;
    const first = await rawPost(running.url, '/bad', key);
    expect(lineText(first)).toBe('HTTP/1.1 500 Internal Server Error');
    expect(first.toString('latin1')).not.toMatch(/\r\nx-injected/i);
    const retry = await rawPost(running.url, '/bad', key, undefined, 'X-Good: 1\r\n');
    expect(lineText(retry)).toBe('HTTP/1.1 201 Created');
    expect(isReplay(retry)).toBe(false);
    expect(runs - before).toBe(2);
  });
});
