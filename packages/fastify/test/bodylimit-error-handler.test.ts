import { randomUUID } from 'node:crypto';
import { connect as http2Connect } from 'node:http2';
import { PROBLEM_TYPES } from '@idem/http';
import { json, send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Fastify's own body limit (bodyLimit of the server, the route or the content-type parser)
// refuses a body before preHandler: each idempotent route gets, at registration, an error
// handler that answers that refusal of a keyed request with idem's body-too-large problem.
// Only an error reaches it; every other error goes on to the app's own handlers as before.

const apps: { close(): Promise<unknown> }[] = [];
afterAll(async () => {
  await Promise.all(apps.map((app) => app.close()));
});

const MIB = 1024 * 1024;
const jsonOf = (bytes: number) => Buffer.from(JSON.stringify({ pad: 'p'.repeat(bytes) }));
const key = () => `k-${randomUUID()}`;
const JSON_TYPE = { 'content-type': 'application/json' };

const pluginOptions = () => ({
  store: createMemoryStore(),
  scope: 'global' as const,
  onWarning: () => {},
});

async function plugged(app: FastifyInstance) {
  await app.register(idempotency, pluginOptions());
  return app;
}

function expectBodyProblem(x: { status: number; headers: Record<string, unknown>; body: Buffer }) {
  expect(x.status).toBe(413);
  expect(String(x.headers['content-type'])).toMatch(/^application\/problem\+json/);
  expect(x.headers['cache-control']).toBe('no-store');
  expect(json(x as never)).toMatchObject({ type: PROBLEM_TYPES.bodyTooLarge, status: 413 });
}

describe('Fastify body limit on an idempotent route', () => {
  let runs = 0;
  let url = '';
  beforeAll(async () => {
    const app = await plugged(Fastify());
    apps.push(app);
    app.post('/default', async () => ({ run: ++runs }));
    app.post('/low', { bodyLimit: 1_000 }, async () => ({ run: ++runs }));
    app.post('/high', { bodyLimit: 8 * MIB }, async () => ({ run: ++runs }));
    app.post('/off', { config: { idempotency: false } }, async () => ({ run: ++runs }));
    app.post(
      '/optional',
      { bodyLimit: 1_000, config: { idempotency: { required: false } } },
      async () => ({ run: ++runs }),
    );
    url = await app.listen({ port: 0, host: '127.0.0.1' });
  });

  it.each([
    ['a Content-Length', false],
    ['chunked framing (Fastify counts it as it comes)', true],
  ])(
    'a keyed 2 MiB JSON body with %s: the problem, connection closed, nothing runs',
    async (_framing, chunked) => {
      const before = runs;
      const x = await send(url, '/default', {
        key: key(),
        body: jsonOf(2 * MIB),
        chunked,
        headers: JSON_TYPE,
      });
      expectBodyProblem(x);
      expect(x.headers.connection).toBe('close');
      expect(runs).toBe(before);
    },
  );

  it("the route's own lower bodyLimit stays the limit: 413 with the problem past it, a body within it runs", async () => {
    const before = runs;
    const over = await send(url, '/low', { key: key(), body: jsonOf(2_000), headers: JSON_TYPE });
    expectBodyProblem(over);
    const chunked = await send(url, '/low', {
      key: key(),
      body: jsonOf(2_000),
      chunked: true,
      headers: JSON_TYPE,
    });
    expectBodyProblem(chunked);
    expect(runs).toBe(before);
    const within = await send(url, '/low', { key: key(), body: jsonOf(500), headers: JSON_TYPE });
    expect(within.status).toBe(200);
    expect(runs).toBe(before + 1);
  });

  it('a bodyLimit above maxBodyBytes: the problem from preHandler, as before', async () => {
    const before = runs;
    const x = await send(url, '/high', { key: key(), body: jsonOf(2 * MIB), headers: JSON_TYPE });
    expectBodyProblem(x);
    expect(runs).toBe(before);
  });

  it("without a key where it is optional, or on a route with idempotency off: Fastify's own 413, as without the plugin", async () => {
    const keyless = await send(url, '/optional', { body: jsonOf(2_000), headers: JSON_TYPE });
    const off = await send(url, '/off', { key: key(), body: jsonOf(2 * MIB), headers: JSON_TYPE });
    for (const x of [keyless, off]) {
      expect(x.status).toBe(413);
      expect(String(x.headers['content-type'])).toMatch(/^application\/json/);
      expect(json(x)).toMatchObject({ code: 'FST_ERR_CTP_BODY_TOO_LARGE' });
    }
  });

  // fastrev23: begin's key check comes first whichever limit refuses the body.
  it('without a key where it is required: 400 missing-key (as past maxBodyBytes), connection closed, nothing runs', async () => {
    const before = runs;
    const keyless = await send(url, '/low', { body: jsonOf(2_000), headers: JSON_TYPE });
    expect(keyless.status).toBe(400);
    expect(String(keyless.headers['content-type'])).toMatch(/^application\/problem\+json/);
    expect(json(keyless)).toMatchObject({ type: PROBLEM_TYPES.missingKey, status: 400 });
    expect(keyless.headers.connection).toBe('close');
    expect(runs).toBe(before);
  });

  it('over HTTP/2 (a keyed body past the limit): the problem', async () => {
    const app = Fastify({ http2: true });
    apps.push(app);
    await app.register(idempotency, pluginOptions());
    let h2runs = 0;
    app.post('/h2', { bodyLimit: 1_000 }, async () => ({ run: ++h2runs }));
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const session = http2Connect(base);
    session.on('error', () => {});
    try {
      const answer = await new Promise<{ status: number; type: string; body: Buffer }>(
        (resolve, reject) => {
          const stream = session.request({
            ':method': 'POST',
            ':path': '/h2',
            'content-type': 'application/json',
            'idempotency-key': key(),
          });
          let status = 0;
          let type = '';
          const parts: Buffer[] = [];
          stream.on('response', (headers) => {
            status = Number(headers[':status']);
            type = String(headers['content-type']);
          });
          stream.on('data', (chunk: Buffer) => parts.push(chunk));
          stream.on('close', () => resolve({ status, type, body: Buffer.concat(parts) }));
          stream.on('error', reject);
          stream.end(jsonOf(5_000));
        },
      );
      expect(answer.status).toBe(413);
      expect(answer.type).toMatch(/^application\/problem\+json/);
      expect(JSON.parse(answer.body.toString())).toMatchObject({
        type: PROBLEM_TYPES.bodyTooLarge,
      });
      expect(h2runs).toBe(0);
    } finally {
      session.close();
    }
  });
});

describe("every other error reaches the app's handlers as without the plugin", () => {
  /** The same app with and without the plugin; each error once through the app's handlers. */
  async function build(withPlugin: boolean, seen: string[]) {
    const app = Fastify();
    if (withPlugin) await plugged(app);
    app.addHook('onError', async (_request, _reply, error) => {
      seen.push(`onError ${named(error)}`);
    });
    app.setErrorHandler((error, _request, reply) => {
      seen.push(`app ${named(error)}`);
      if ((error as { statusCode?: number }).statusCode === 409)
        return reply.code(409).send({ mine: true });
      throw error;
    });
    app.post('/error', async () => {
      const error = new Error('conflict') as Error & { statusCode: number };
      error.statusCode = 409;
      throw error;
    });
    app.post('/rethrown', async () => {
      throw new Error('boom');
    });
    app.post('/string', async () => {
      throw 'not an error';
    });
    app.post('/object', async () => {
      throw { statusCode: 418, message: 'teapot' };
    });
    // The route's own body-limit error, thrown while it runs: not Fastify's parser refusing
    // the body, so the app answers it.
    app.post('/late-limit', async () => {
      const error = new Error('nested body too large') as Error & {
        code: string;
        statusCode: number;
      };
      error.code = 'FST_ERR_CTP_BODY_TOO_LARGE';
      error.statusCode = 413;
      throw error;
    });
    app.post(
      '/own',
      {
        bodyLimit: 100,
        errorHandler: (error, _request, reply) => {
          seen.push(`own ${named(error)}`);
          return reply.code(400).send({ own: (error as { code?: string }).code ?? 'none' });
        },
      },
      async () => {
        throw new Error('own');
      },
    );
    app.post(
      '/own-optional',
      {
        bodyLimit: 100,
        config: { idempotency: { required: false } },
        errorHandler: (error, _request, reply) => {
          seen.push(`own ${named(error)}`);
          return reply.code(400).send({ own: (error as { code?: string }).code ?? 'none' });
        },
      },
      async () => {
        throw new Error('own');
      },
    );
    await app.ready();
    apps.push(app);
    return app;
  }

  function named(error: unknown): string {
    return error instanceof Error ? `${error.name}:${error.message}` : JSON.stringify(error);
  }

  it('the same statuses, bodies and handler calls, each once', async () => {
    const seenWith: string[] = [];
    const seenWithout: string[] = [];
    const withIdem = await build(true, seenWith);
    const without = await build(false, seenWithout);
    for (const path of ['/error', '/rethrown', '/string', '/object', '/late-limit', '/own']) {
      const request = {
        method: 'POST' as const,
        url: path,
        headers: { 'idempotency-key': key(), 'content-type': 'application/json' },
        payload: '{"a":1}',
      };
      seenWith.length = 0;
      seenWithout.length = 0;
      const a = await withIdem.inject(request);
      const b = await without.inject(request);
      expect({ path, status: a.statusCode, body: a.body, type: a.headers['content-type'] }).toEqual(
        { path, status: b.statusCode, body: b.body, type: b.headers['content-type'] },
      );
      expect(seenWith).toEqual(seenWithout);
    }
  });

  it("a keyed body past the route's limit: idem's problem in place of the route's own handler; keyless, the route's own handler", async () => {
    const seen: string[] = [];
    const app = await build(true, seen);
    const keyed = await app.inject({
      method: 'POST',
      url: '/own',
      headers: { 'idempotency-key': key(), 'content-type': 'application/json' },
      payload: jsonOf(200),
    });
    expect(keyed.statusCode).toBe(413);
    expect(keyed.json()).toMatchObject({ type: PROBLEM_TYPES.bodyTooLarge });
    // The onError hooks still see Fastify's error (logging), once.
    expect(seen).toEqual(['onError FastifyError:Request body is too large']);
    seen.length = 0;
    // Keyless where the key is required: begin's 400 missing-key, as past maxBodyBytes
    // (fastrev23); the route's own handler does not see it either.
    const keylessPost = (url: string) => {
      seen.length = 0;
      return app.inject({
        method: 'POST',
        url,
        headers: { 'content-type': 'application/json' },
        payload: jsonOf(200),
      });
    };
    const keyless = await keylessPost('/own');
    expect(keyless.statusCode).toBe(400);
    expect(keyless.json()).toMatchObject({ type: PROBLEM_TYPES.missingKey });
    expect(seen).toEqual(['onError FastifyError:Request body is too large']);
    // Keyless where the key is optional: it passes the plugin, to the route's own handler.
    const optional = await keylessPost('/own-optional');
    expect(optional.statusCode).toBe(400);
    expect(optional.json()).toEqual({ own: 'FST_ERR_CTP_BODY_TOO_LARGE' });
    expect(seen).toEqual([
      'onError FastifyError:Request body is too large',
      'own FastifyError:Request body is too large',
    ]);
  });
});
