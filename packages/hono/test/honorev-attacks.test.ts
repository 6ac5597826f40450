import { request } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { InvalidInputError } from '@idem/core';
import { PROBLEM_TYPES } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import { Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type IdempotencyVariables, idempotency } from '../src/index.js';
import { send, sendRaw, sleep } from './honorev-support.js';

// Adversarial review (honorev) of @idem/hono on @hono/node-server, loopback, memory store.

const runs = new Map<string, number>();
const bump = (name: string) => runs.set(name, (runs.get(name) ?? 0) + 1);
const servers: ServerType[] = [];
let port = 0;
let waitPort = 0;

function listen(app: Hono): Promise<number> {
  return new Promise((resolve) => {
    const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () =>
      resolve((server.address() as AddressInfo).port),
    );
    servers.push(server);
  });
}

function build(wait: boolean): Hono {
  const app = new Hono({ strict: false });
  app.onError((_error, c) => c.json({ error: 'internal' }, 500));
  app.use(
    '/api/*',
    idempotency({
      store: createMemoryStore(),
      scope: (c) => ({ principal: c.req.header('x-tenant') ?? 'tenant-a' }),
      maxBodyBytes: 64 * 1024,
      onWarning: () => {},
      ...(wait ? { wait: { timeoutMs: 5_000 } } : {}),
    }),
  );
  app.post('/api/charges', async (c) => {
    const body = await c.req.text();
    bump(`charges:${c.req.header('x-run') ?? ''}`);
    return c.json({ run: runs.get(`charges:${c.req.header('x-run') ?? ''}`), body }, 201);
  });
  app.patch('/api/charges', (c) => {
    bump(`patch:${c.req.header('x-run') ?? ''}`);
    return c.json({ patched: true }, 200);
  });
  app.post('/api/refunds', (c) => {
    bump(`refunds:${c.req.header('x-run') ?? ''}`);
    return c.json({ refund: true }, 201);
  });
  app.get('/api/charges', (c) => {
    bump(`get:${c.req.header('x-run') ?? ''}`);
    return c.json({ list: [] });
  });
  app.post('/api/slow', async (c) => {
    bump(`slow:${c.req.header('x-run') ?? ''}`);
    await sleep(400);
    return c.json({ slow: runs.get(`slow:${c.req.header('x-run') ?? ''}`) }, 201);
  });
  app.post('/api/throws', () => {
    bump('throws');
    if ((runs.get('throws') ?? 0) === 1) throw new Error('boom');
    return new Response(JSON.stringify({ ok: true }), {
      status: 201,
      headers: { 'content-type': 'application/json' },
    });
  });
  app.post('/api/breaks', (c) => {
    bump('breaks');
    const first = (runs.get('breaks') ?? 0) === 1;
    let n = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        await sleep(10);
        if (n === 2 && first) {
          controller.error(new Error('upstream died'));
          return;
        }
        if (n === 4) {
          controller.close();
          return;
        }
        controller.enqueue(new TextEncoder().encode(`part ${n++}\n`));
      },
    });
    return c.body(body, 200, { 'content-type': 'text/plain' });
  });
  app.post('/api/cookies', (c) => {
    bump('cookies');
    c.header('set-cookie', 'session=secret; HttpOnly');
    c.header('x-internal-trace', 'abc');
    c.header('cache-control', 'no-store');
    return c.json({ cookie: true }, 201);
  });
  return app;
}

beforeAll(async () => {
  port = await listen(build(false));
  waitPort = await listen(build(true));
});
afterAll(async () => {
  await Promise.all(
    servers.map((s) => new Promise((resolve) => s.close(() => resolve(undefined)))),
  );
});

const json = { 'content-type': 'application/json' };
let unique = 0;
const freshKey = (label: string) => `honorev-${label}-${++unique}-${Date.now()}`;

describe('honorev: isolation and identity of a key', () => {
  it('one key from two tenants: both run, each retry replays its own outcome', async () => {
    const key = freshKey('tenants');
    const run = 'tenants';
    const a = await send(
      port,
      'POST',
      '/api/charges',
      { ...json, 'idempotency-key': key, 'x-tenant': 'A', 'x-run': run },
      '{"x":1}',
    );
    const b = await send(
      port,
      'POST',
      '/api/charges',
      { ...json, 'idempotency-key': key, 'x-tenant': 'B', 'x-run': run },
      '{"x":1}',
    );
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(runs.get(`charges:${run}`)).toBe(2);
    const a2 = await send(
      port,
      'POST',
      '/api/charges',
      { ...json, 'idempotency-key': key, 'x-tenant': 'A', 'x-run': run },
      '{"x":1}',
    );
    const b2 = await send(
      port,
      'POST',
      '/api/charges',
      { ...json, 'idempotency-key': key, 'x-tenant': 'B', 'x-run': run },
      '{"x":1}',
    );
    expect(a2.body).toBe(a.body);
    expect(b2.body).toBe(b.body);
    expect(a2.headers['idempotent-replayed']).toBe('true');
    expect(b2.headers['idempotent-replayed']).toBe('true');
    expect(runs.get(`charges:${run}`)).toBe(2);
  });

  it('one key on two routes and on two methods of one path: each operation its own, none replays another', async () => {
    const key = freshKey('routes');
    const run = 'routes';
    const h = { ...json, 'idempotency-key': key, 'x-run': run };
    const c = await send(port, 'POST', '/api/charges', h, '{}');
    const r = await send(port, 'POST', '/api/refunds', h, '{}');
    const p = await send(port, 'PATCH', '/api/charges', h, '{}');
    expect([c.status, r.status, p.status]).toEqual([201, 201, 200]);
    expect(JSON.parse(r.body)).toEqual({ refund: true });
    expect(JSON.parse(p.body)).toEqual({ patched: true });
    expect(r.headers['idempotent-replayed']).toBeUndefined();
    expect(p.headers['idempotent-replayed']).toBeUndefined();
    expect([
      runs.get(`charges:${run}`),
      runs.get(`refunds:${run}`),
      runs.get(`patch:${run}`),
    ]).toEqual([1, 1, 1]);
  });

  it('path spellings (trailing slash, escapes, doubled slash, case): never a second run under one key', async () => {
    const key = freshKey('paths');
    const run = 'paths';
    const h = { ...json, 'idempotency-key': key, 'x-run': run };
    const first = await send(port, 'POST', '/api/charges', h, '{"p":1}');
    expect(first.status).toBe(201);
    const answers = [];
    for (const path of [
      '/api/charges/',
      '/api/%63harges',
      '/api//charges',
      '/API/charges',
      '/api/charges?',
      '/api/./charges',
    ]) {
      answers.push([path, (await send(port, 'POST', path, h, '{"p":1}')).status]);
    }
    // Each is a replay (200-class with the marker), a 422 or a 404: never another execution.
    console.info('honorev path spellings', JSON.stringify(answers));
    for (const [path, status] of answers) expect([201, 404, 422], String(path)).toContain(status);
    expect(runs.get(`charges:${run}`)).toBe(1);
  });
});

describe('honorev: fingerprint equivalence', () => {
  const post = (key: string, run: string, body: string, type = 'application/json') =>
    send(
      port,
      'POST',
      '/api/charges',
      { 'content-type': type, 'idempotency-key': key, 'x-run': run },
      body,
    );

  it('JSON that differs only in key order, whitespace, escapes and number spelling is the same request (replayed)', async () => {
    const key = freshKey('json-same');
    const first = await post(key, 'json-same', '{"a":1,"b":[1,2],"c":{"d":"x"}}');
    expect(first.status).toBe(201);
    for (const body of [
      '{ "c" : { "d" : "x" } , "b" : [ 1 , 2 ] , "a" : 1 }',
      '{"b":[1,2],"a":1.0,"c":{"d":"\\u0078"}}',
      '{"a":1e0,"\\u0062":[1,2],"c":{"d":"x"}}\n',
    ]) {
      const again = await post(key, 'json-same', body, 'application/json; charset=utf-8');
      expect(again.status, body).toBe(201);
      expect(again.headers['idempotent-replayed'], body).toBe('true');
      expect(again.body).toBe(first.body);
    }
    expect(runs.get('charges:json-same')).toBe(1);
  });

  it('really different requests under one key are refused with 422 (array order, big integers, duplicate members, media type)', async () => {
    const key = freshKey('json-diff');
    const first = await post(key, 'json-diff', '{"a":12345678901234567890,"b":[1,2]}');
    expect(first.status).toBe(201);
    for (const [body, type] of [
      ['{"a":12345678901234567890,"b":[2,1]}', 'application/json'],
      ['{"a":12345678901234567891,"b":[1,2]}', 'application/json'],
      ['{"a":1,"a":12345678901234567890,"b":[1,2]}', 'application/json'],
      ['{"a":12345678901234567890,"b":[1,2]}', 'text/plain'],
    ] as const) {
      const again = await post(key, 'json-diff', body, type);
      expect(again.status, `${type} ${body}`).toBe(422);
      expect(again.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(JSON.parse(again.body).type).toBe(PROBLEM_TYPES.keyReused);
    }
    expect(runs.get('charges:json-diff')).toBe(1);
  });

  it('text bodies are compared as bytes: reordered "keys" in text/plain are another request (422)', async () => {
    const key = freshKey('text');
    expect((await post(key, 'text', '{"a":1,"b":2}', 'text/plain')).status).toBe(201);
    expect((await post(key, 'text', '{"b":2,"a":1}', 'text/plain')).status).toBe(422);
    expect(runs.get('charges:text')).toBe(1);
  });
});

describe('honorev: bodies, failures and concurrency', () => {
  it('a declared Content-Length over maxBodyBytes: 413 problem, handler not run, key not held', async () => {
    const key = freshKey('413');
    const big = 'x'.repeat(64 * 1024 + 1);
    const tooBig = await send(
      port,
      'POST',
      '/api/charges',
      { 'content-type': 'text/plain', 'idempotency-key': key, 'x-run': '413' },
      big,
    );
    expect(tooBig.status).toBe(413);
    expect(JSON.parse(tooBig.body).type).toBe(PROBLEM_TYPES.bodyTooLarge);
    expect(runs.get('charges:413')).toBeUndefined();
    const ok = await send(
      port,
      'POST',
      '/api/charges',
      { 'content-type': 'text/plain', 'idempotency-key': key, 'x-run': '413' },
      'small',
    );
    expect(ok.status).toBe(201);
    expect(runs.get('charges:413')).toBe(1);
  });

  it('an endless chunked body: 413 before the client has sent 16 MiB, handler not run', async () => {
    const key = freshKey('chunked');
    let written = 0;
    const result = await new Promise<{ status: number; written: number }>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path: '/api/charges',
          method: 'POST',
          agent: false,
          headers: {
            'content-type': 'text/plain',
            'idempotency-key': key,
            'x-run': 'chunked',
            'transfer-encoding': 'chunked',
          },
        },
        (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, written });
          req.destroy();
        },
      );
      req.on('error', (error) => (written > 0 ? undefined : reject(error)));
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = () => {
        while (written < 16 * 1024 * 1024 && !req.destroyed) {
          written += chunk.length;
          if (!req.write(chunk)) {
            req.once('drain', pump);
            return;
          }
        }
      };
      pump();
      setTimeout(() => reject(new Error('no answer to an endless body')), 10_000).unref();
    });
    console.info('honorev chunked: written at the 413', result.written);
    expect(result.status).toBe(413);
    expect(result.written).toBeLessThan(16 * 1024 * 1024);
    expect(runs.get('charges:chunked')).toBeUndefined();
  });

  it('keep-alive framing after a 413 (declared and chunked): the next request on the connection is parsed as sent, its own body, no smuggled request', async () => {
    const inner =
      'POST /api/charges HTTP/1.1\r\nHost: a\r\nIdempotency-Key: smuggled\r\nx-run: smuggled\r\nContent-Length: 2\r\n\r\n{}';
    const big = inner + ' '.repeat(70_000 - inner.length);
    const chunk = (text: string) => `${text.length.toString(16)}\r\n${text}\r\n`;
    const next = (key: string) =>
      `POST /api/charges HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${key}\r\nx-run: framing\r\nContent-Type: application/json\r\nContent-Length: 9\r\nConnection: close\r\n\r\n{"s":"2"}`;
    const declared = `POST /api/charges HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${freshKey('frame')}\r\nx-run: framing\r\nContent-Length: ${big.length}\r\n\r\n${big}`;
    const chunked = `POST /api/charges HTTP/1.1\r\nHost: a\r\nIdempotency-Key: ${freshKey('frame')}\r\nx-run: framing\r\nTransfer-Encoding: chunked\r\n\r\n${chunk(big)}0\r\n\r\n`;
    for (const first of [declared, chunked]) {
      const text = await new Promise<string>((resolve) => {
        const socket = connect(port, '127.0.0.1', () =>
          socket.write(first + next(freshKey('after'))),
        );
        const chunks: Buffer[] = [];
        socket.on('data', (c: Buffer) => chunks.push(c));
        socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
        setTimeout(() => socket.destroy(), 5_000).unref();
      });
      expect([...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1])).toEqual(['413', '201']);
      expect(text).toContain('{\\"s\\":\\"2\\"}');
    }
    expect(runs.get('charges:framing')).toBe(2);
    expect(runs.get('charges:smuggled')).toBeUndefined();
  });

  it('a client that leaves mid-upload: the handler never runs and the key is not held', async () => {
    const key = freshKey('upload');
    const head = Buffer.from(
      `${[
        'POST /api/charges HTTP/1.1',
        'Host: 127.0.0.1',
        'Content-Type: application/json',
        'Content-Length: 1000',
        `Idempotency-Key: ${key}`,
        'x-run: upload',
      ].join('\r\n')}\r\n\r\n{"partial":`,
      'latin1',
    );
    await new Promise<void>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.write(head, () =>
          setTimeout(() => {
            socket.destroy();
            resolve();
          }, 50),
        );
      });
    });
    await sleep(50);
    expect(runs.get('charges:upload')).toBeUndefined();
    const retry = await send(
      port,
      'POST',
      '/api/charges',
      { ...json, 'idempotency-key': key, 'x-run': 'upload' },
      '{"partial":1}',
    );
    expect(retry.status).toBe(201);
    expect(runs.get('charges:upload')).toBe(1);
  });

  it('a handler that throws: 500, not recorded; the retry runs again and is then replayed', async () => {
    const key = freshKey('throws');
    const h = { ...json, 'idempotency-key': key };
    const first = await send(port, 'POST', '/api/throws', h, '{}');
    expect(first.status).toBe(500);
    const second = await send(port, 'POST', '/api/throws', h, '{}');
    expect(second.status).toBe(201);
    const third = await send(port, 'POST', '/api/throws', h, '{}');
    expect(third.status).toBe(201);
    expect(third.headers['idempotent-replayed']).toBe('true');
    expect(runs.get('throws')).toBe(2);
  });

  it('a streamed response that breaks midway is not a success: never replayed partial, the retry runs again', async () => {
    const key = freshKey('breaks');
    const h = { ...json, 'idempotency-key': key };
    const first = await send(port, 'POST', '/api/breaks', h, '{}');
    expect(first.broken === true || first.body !== 'part 0\npart 1\npart 2\npart 3\n').toBe(true);
    const second = await send(port, 'POST', '/api/breaks', h, '{}');
    expect(second.status).toBe(200);
    expect(second.body).toBe('part 0\npart 1\npart 2\npart 3\n');
    expect(second.headers['idempotent-replayed']).toBeUndefined();
    const third = await send(port, 'POST', '/api/breaks', h, '{}');
    expect(third.headers['idempotent-replayed']).toBe('true');
    expect(third.body).toBe(second.body);
    expect(runs.get('breaks')).toBe(2);
  });

  it('10 concurrent duplicates: one execution, the others 409 in-progress with Retry-After, then a replay', async () => {
    const key = freshKey('dup');
    const h = { ...json, 'idempotency-key': key, 'x-run': 'dup' };
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => send(port, 'POST', '/api/slow', h, '{"d":1}')),
    );
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(9);
    for (const a of answers.filter((x) => x.status === 409)) {
      expect(Number(a.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(JSON.parse(a.body).type).toBe(PROBLEM_TYPES.inProgress);
    }
    const after = await send(port, 'POST', '/api/slow', h, '{"d":1}');
    expect(after.headers['idempotent-replayed']).toBe('true');
    expect(runs.get('slow:dup')).toBe(1);
  });

  it('10 concurrent duplicates with wait: one execution, every caller gets the same outcome', async () => {
    const key = freshKey('wait');
    const h = { ...json, 'idempotency-key': key, 'x-run': 'wait' };
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => send(waitPort, 'POST', '/api/slow', h, '{"d":1}')),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(201));
    expect(new Set(answers.map((a) => a.body)).size).toBe(1);
    expect(runs.get('slow:wait')).toBe(1);
  });

  it('waiting duplicates of a first execution that fails (500, not recorded): exactly one of them runs again, the rest replay it', async () => {
    const app = new Hono();
    let failing = 0;
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        wait: { timeoutMs: 5_000 },
        onWarning: () => {},
      }),
    );
    app.post('/flaky', async (c) => {
      const n = ++failing;
      await sleep(300);
      return c.json({ n }, n === 1 ? 500 : 201);
    });
    const flakyPort = await listen(app);
    const key = freshKey('flaky');
    const answers = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        sleep(i * 10).then(() => send(flakyPort, 'POST', '/flaky', { 'idempotency-key': key })),
      ),
    );
    expect(answers.map((a) => a.status).sort()).toEqual([201, 201, 201, 201, 201, 500]);
    expect(answers.filter((a) => a.headers['idempotent-replayed'] === 'true')).toHaveLength(4);
    expect(new Set(answers.filter((a) => a.status === 201).map((a) => a.body))).toEqual(
      new Set(['{"n":2}']),
    );
    expect(failing).toBe(2);
  });

  it('replays never carry Set-Cookie or headers off the allowlist; they carry the marker', async () => {
    const key = freshKey('cookies');
    const h = { ...json, 'idempotency-key': key };
    const first = await send(port, 'POST', '/api/cookies', h, '{}');
    expect(first.headers['set-cookie']).toEqual(['session=secret; HttpOnly']);
    const replay = await send(port, 'POST', '/api/cookies', h, '{}');
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers['set-cookie']).toBeUndefined();
    expect(replay.headers['x-internal-trace']).toBeUndefined();
    expect(replay.headers['cache-control']).toBe('no-store');
    expect(replay.body).toBe(first.body);
    expect(runs.get('cookies')).toBe(1);
  });

  it('GET and HEAD pass through: no key needed, a bad key ignored, every request runs', async () => {
    const a = await send(port, 'GET', '/api/charges', { 'x-run': 'gh' });
    const b = await send(port, 'GET', '/api/charges', { 'x-run': 'gh', 'idempotency-key': '""' });
    const c = await send(port, 'HEAD', '/api/charges', { 'x-run': 'gh', 'idempotency-key': 'k' });
    expect([a.status, b.status, c.status]).toEqual([200, 200, 200]);
    expect(b.headers['idempotent-replayed']).toBeUndefined();
    expect(runs.get('get:gh')).toBe(3);
  });
});

describe('honorev: bad keys', () => {
  const badKeys: [string, Buffer][] = [
    ['empty', Buffer.from('')],
    ['empty quoted', Buffer.from('""')],
    ['256 characters', Buffer.from('k'.repeat(256))],
    ['256 characters quoted', Buffer.from(`"${'k'.repeat(256)}"`)],
    ['non-ASCII byte (latin-1 é)', Buffer.from([0x6b, 0xe9])],
    ['UTF-8 é', Buffer.from('k\u00e9', 'utf8')],
    ['tab inside', Buffer.from('a\tb')],
    ['two quoted keys', Buffer.from('"a", "b"')],
    ['unterminated quote', Buffer.from('"abc')],
    ['quote inside a bare key', Buffer.from('ab"c')],
    ['bad escape', Buffer.from('"a\\nb"')],
  ];
  for (const [name, value] of badKeys) {
    it(`key ${name}: 400 invalid-key problem, handler not run`, async () => {
      const run = `bad-${name}`;
      const head = Buffer.concat([
        Buffer.from(
          [
            'POST /api/charges HTTP/1.1',
            'Host: 127.0.0.1',
            'Connection: close',
            'Content-Type: application/json',
            'Content-Length: 2',
            `x-run: ${run.replace(/[^a-z0-9-]/gi, '_')}`,
            'Idempotency-Key: ',
          ].join('\r\n'),
          'latin1',
        ),
        value,
      ]);
      const answer = await sendRaw(port, head, '{}');
      expect(answer.status).toBe(400);
      expect(answer.text).toMatch(/content-type: application\/problem\+json/i);
      expect(answer.text).toContain(PROBLEM_TYPES.invalidKey);
      expect(runs.get(`charges:${run.replace(/[^a-z0-9-]/gi, '_')}`)).toBeUndefined();
    });
  }

  it('a DEL byte in the key is refused (400) by the HTTP parser before the middleware; nothing runs', async () => {
    const head = Buffer.from(
      [
        'POST /api/charges HTTP/1.1',
        'Host: 127.0.0.1',
        'Connection: close',
        'Content-Type: application/json',
        'Content-Length: 2',
        'x-run: del',
        'Idempotency-Key: "a\x7fb"',
      ].join('\r\n'),
      'latin1',
    );
    const answer = await sendRaw(port, head, '{}');
    expect(answer.status).toBe(400);
    expect(runs.get('charges:del')).toBeUndefined();
  });

  it('two Idempotency-Key header lines: 400, never one of them picked', async () => {
    const head = Buffer.from(
      [
        'POST /api/charges HTTP/1.1',
        'Host: 127.0.0.1',
        'Connection: close',
        'Content-Type: application/json',
        'Content-Length: 2',
        'x-run: twolines',
        'Idempotency-Key: "a"',
        'Idempotency-Key: "a"',
      ].join('\r\n'),
      'latin1',
    );
    const answer = await sendRaw(port, head, '{}');
    expect(answer.status).toBe(400);
    expect(runs.get('charges:twolines')).toBeUndefined();
  });

  it('a 255-character key and a quoted key with parameters are accepted (and the same key as the bare form)', async () => {
    const long = `honorev${'k'.repeat(248)}`.slice(0, 255);
    const a = await send(
      port,
      'POST',
      '/api/charges',
      { ...json, 'idempotency-key': long, 'x-run': 'k255' },
      '{}',
    );
    expect(a.status).toBe(201);
    const b = await send(
      port,
      'POST',
      '/api/charges',
      { ...json, 'idempotency-key': `"${long}";v=1`, 'x-run': 'k255' },
      '{}',
    );
    expect(b.status).toBe(201);
    expect(b.headers['idempotent-replayed']).toBe('true');
    expect(runs.get('charges:k255')).toBe(1);
  });
});

describe('honorev: options at creation', () => {
  it('refuses a missing scope, a never-recorded header and a negative body limit with InvalidInputError', () => {
    const store = createMemoryStore();
    expect(() => idempotency({ store } as never)).toThrow(InvalidInputError);
    expect(() => idempotency({ store, scope: 'tenant' as never })).toThrow(InvalidInputError);
    expect(() =>
      idempotency({ store, scope: 'global', recordedHeaders: ['content-type', 'Set-Cookie'] }),
    ).toThrow(InvalidInputError);
    for (const bad of [
      { wait: { timeoutMs: -1 } },
      { wait: true },
      { leaseMs: 0 },
      { retentionMs: Number.NaN },
      { headerName: 'Idempotency Key' },
      { inProgressRetryAfterSeconds: -1 },
      { storeTimeoutMs: 0 },
      { methods: 'POST' },
      { maxBodyBytes: 1.5 },
      { recordedHeaders: ['content type'] },
      { isFinal: 'yes' },
      { required: 'no' },
    ]) {
      expect(
        () => idempotency({ store, scope: 'global', ...(bad as object) }),
        JSON.stringify(bad),
      ).toThrow(InvalidInputError);
    }
    expect(() => idempotency({ store, scope: 'global', maxBodyBytes: -1 })).toThrow(
      InvalidInputError,
    );
  });
});

describe('honorev: a handler that holds its key', () => {
  it('a handler waiting forever is stopped by its signal at maxHoldMs; duplicates meanwhile get 409; one run, then replays', async () => {
    const app = new Hono<{ Variables: IdempotencyVariables }>();
    let holds = 0;
    let abortedAfter = -1;
    app.use(
      idempotency({
        store: createMemoryStore(),
        scope: 'global',
        leaseMs: 300,
        maxHoldMs: 600,
        onWarning: () => {},
      }),
    );
    app.post('/hold', async (c) => {
      holds++;
      const context = c.get('idempotency');
      const started = Date.now();
      // Stops only when the execution's signal says the key is no longer held.
      await new Promise((resolve) => context?.signal.addEventListener('abort', resolve));
      abortedAfter = Date.now() - started;
      return c.json({ fence: context?.fence }, 201);
    });
    const holdPort = await listen(app as unknown as Hono);
    const key = freshKey('hold');
    const first = send(holdPort, 'POST', '/hold', { 'idempotency-key': key });
    await sleep(100);
    const during = await send(holdPort, 'POST', '/hold', { 'idempotency-key': key });
    expect(during.status).toBe(409);
    const answer = await first;
    expect(abortedAfter).toBeGreaterThanOrEqual(500);
    expect(abortedAfter).toBeLessThan(2_000);
    expect(answer.status).toBe(201);
    const after = await send(holdPort, 'POST', '/hold', { 'idempotency-key': key });
    expect(after.status).toBe(201);
    expect(after.headers['idempotent-replayed']).toBe('true');
    expect(after.body).toBe(answer.body);
    expect(holds).toBe(1);
  });
});
