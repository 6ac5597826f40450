import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// rev11: (1) the rev10c merge of upstream headers into replays and problems: per-request
// headers set before next() must be this request's, never the first request's; recorded
// headers stay the recorded ones. (2) rev10b's RFC 9110 Content-Type parameter reading:
// spellings the app's own parsers take must not be refused.

const servers: ServerType[] = [];
afterAll(() =>
  Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve)))),
);

async function start() {
  let runs = 0;
  let n = 0;
  const app = new Hono();
  app.use(async (c, next) => {
    n++;
    c.header('x-request-id', `req-${n}`);
    c.header('set-cookie', `seen=${n}; Path=/`);
    c.header('content-language', 'upstream');
    await next();
  });
  app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  app.post('/charges', async (c) => {
    runs++;
    const body = await c.req.json();
    c.header('content-language', 'handler');
    return c.json({ id: runs, body }, 201);
  });
  const port = await new Promise<number>((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
      resolve(info.port),
    );
    servers.push(server);
  });
  return { port, runs: () => runs };
}

async function post(port: number, key: string, contentType = 'application/json', body = '{"a":1}') {
  const response = await fetch(`http://127.0.0.1:${port}/charges`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': contentType },
    body,
    signal: AbortSignal.timeout(5_000),
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed'),
    requestId: response.headers.get('x-request-id'),
    cookies: response.headers.getSetCookie(),
    language: response.headers.get('content-language'),
    contentType: response.headers.get('content-type'),
    text: await response.text(),
  };
}

describe('rev11 hono: upstream headers on replays', () => {
  it("a replay carries this request's upstream headers, the recorded ones unchanged", async () => {
    const { port, runs } = await start();
    const first = await post(port, 'rev11-hono-up');
    const replay = await post(port, 'rev11-hono-up');
    expect(first.status).toBe(201);
    expect(replay.replayed).toBe('true');
    expect(replay.text).toBe(first.text);
    expect(replay.contentType).toBe(first.contentType);
    expect(replay.language).toBe(first.language);
    expect(replay.requestId).toBe('req-2');
    expect(replay.cookies).toEqual(['seen=2; Path=/']);
    const conflict = await post(port, 'rev11-hono-up', 'application/json', '{"a":2}');
    expect(conflict.status).toBe(422);
    expect(conflict.contentType).toBe('application/problem+json');
    expect(conflict.requestId).toBe('req-3');
    expect(runs()).toBe(1);
  });

  it('Content-Type parameter spellings RFC 9110 allows are taken (quoted charset, empty params)', async () => {
    const { port } = await start();
    for (const [i, type] of [
      'application/json; charset="utf-8"',
      'application/json;charset=UTF-8;',
      'application/json; charset=utf-8;; x=y',
      'application/json;\tcharset=utf-8',
    ].entries()) {
      const answer = await post(port, `rev11-hono-ct-${i}`, type);
      expect([type, answer.status]).toEqual([type, 201]);
    }
  });

  // Held: spaces around '=' (`charset = utf-8`, taken by the `content-type` package behind
  // body-parser) make the parameter list unparseable, but the request is not refused.
  it('a charset spelled with spaces around = (taken by body-parser and before rev10b) is not refused', async () => {
    const { port } = await start();
    const answer = await post(port, 'rev11-hono-ct-space', 'application/json; charset = utf-8');
    expect(answer.status).toBe(201);
  });
});
