import { request } from 'node:http';
import { PROBLEM_TYPES } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Fastify's own `bodyLimit` (1 MiB by default, as `maxBodyBytes`) refuses a large body before
// the plugin's preHandler runs. To a request whose body idem would have read (an idempotent
// route, a method that needs a key, a key sent), that 413 is the body-too-large problem, as
// on the other adapters; Fastify's own answer stays for every other request, and an app's own
// error handler keeps its answer.

const big = () => Buffer.from(JSON.stringify({ pad: 'p'.repeat(2 * 1024 * 1024) }));
const small = (n: number) => Buffer.from(JSON.stringify({ pad: 'p'.repeat(n) }));
const jsonType = { 'content-type': 'application/json' };

function expectBodyTooLarge(x: Awaited<ReturnType<typeof send>>): void {
  expect(x.status).toBe(413);
  expect(x.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(json(x)).toMatchObject({ type: PROBLEM_TYPES.bodyTooLarge, status: 413 });
  // Framed for the problem's own bytes, not for Fastify's payload.
  expect(Number(x.headers['content-length'])).toBe(x.body.length);
}

function expectFastifys(x: Awaited<ReturnType<typeof send>>): void {
  expect(x.status).toBe(413);
  expect(x.headers['content-type']).toMatch(/^application\/json/);
  expect(json(x)).toMatchObject({ code: 'FST_ERR_CTP_BODY_TOO_LARGE' });
}

const runs: Record<string, number> = {};
const run = (name: string) => {
  runs[name] = (runs[name] ?? 0) + 1;
  return { ran: runs[name] };
};

describe('@idem/fastify: Fastify bodyLimit answers the body-too-large problem to keyed requests', () => {
  let app: FastifyInstance;
  let url = '';
  beforeAll(async () => {
    app = Fastify();
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    app.post('/charge', async () => run('charge'));
    app.post('/tight', { bodyLimit: 1000 }, async () => run('tight'));
    app.post('/off', { config: { idempotency: false } }, async () => run('off'));
    // A method that needs no key: the hook is not even on the route.
    app.put('/put', async () => run('put'));
    await app.register(async (scoped) => {
      scoped.setErrorHandler((error, _request, reply) => {
        void reply
          .code((error as { statusCode?: number }).statusCode ?? 500)
          .type('text/plain')
          .send(`app says: ${(error as { code?: string }).code}`);
      });
      scoped.post('/own-handler', async () => run('own-handler'));
    });
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(() => app.close());

  it('a 2 MiB body with a key -> the problem (declared length), handler not run', async () => {
    const x = await send(url, '/charge', { key: 'big-1', body: big(), headers: jsonType });
    expectBodyTooLarge(x);
    expect(runs.charge).toBeUndefined();
  });

  it("a body over a route's lower bodyLimit with a key -> the problem; the same key then runs", async () => {
    const x = await send(url, '/tight', { key: 'tight-1', body: small(2000), headers: jsonType });
    expectBodyTooLarge(x);
    // Nothing was taken: the key is free for a body that fits.
    const ok = await send(url, '/tight', { key: 'tight-1', body: small(10), headers: jsonType });
    expect(ok.status).toBe(200);
    expect(json(ok)).toEqual({ ran: 1 });
  });

  it('a chunked body (no declared length) past the limit with a key -> the problem', async () => {
    const x = await new Promise<{ status?: number; type?: string; body: string }>(
      (resolve, reject) => {
        const req = request(`${url}/charge`, {
          method: 'POST',
          headers: { ...jsonType, 'idempotency-key': 'chunked-1', 'transfer-encoding': 'chunked' },
        });
        req.on('response', (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            body += chunk;
          });
          res.on('end', () =>
            resolve({ status: res.statusCode, type: res.headers['content-type'], body }),
          );
        });
        req.on('error', reject);
        const payload = big();
        for (let at = 0; at < payload.length; at += 65_536)
          req.write(payload.subarray(at, at + 65_536));
        req.end();
      },
    );
    expect(x.status).toBe(413);
    expect(x.type).toMatch(/^application\/problem\+json/);
    expect(JSON.parse(x.body)).toMatchObject({ type: PROBLEM_TYPES.bodyTooLarge, status: 413 });
  });

  it("without a key, on a route idempotency is off for, or for a method that needs none, Fastify's own 413 stays", async () => {
    expectFastifys(await send(url, '/charge', { body: big(), headers: jsonType }));
    expectFastifys(await send(url, '/off', { key: 'off-1', body: big(), headers: jsonType }));
    expectFastifys(
      await send(url, '/put', { method: 'PUT', key: 'put-1', body: big(), headers: jsonType }),
    );
  });

  it("an app's own error handler keeps its answer", async () => {
    const x = await send(url, '/own-handler', { key: 'own-1', body: big(), headers: jsonType });
    expect(x.status).toBe(413);
    expect(x.body.toString()).toBe('app says: FST_ERR_CTP_BODY_TOO_LARGE');
  });

  it('the server answers the next request after the problem', async () => {
    expectBodyTooLarge(
      await send(url, '/charge', { key: 'big-2', body: big(), headers: jsonType }),
    );
    const ok = await send(url, '/charge', { key: 'after-big', body: small(5), headers: jsonType });
    expect(ok.status).toBe(200);
  });
});
