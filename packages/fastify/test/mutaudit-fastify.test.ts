import { Readable } from 'node:stream';
import { send } from '@idem/http-conformance';
import { createMemoryStore } from '@idem/store-memory';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';

// Mutation audit of the README's guarantees (see the report of wt/mutx): each test here
// fails under one small change of the plugin (or of @idem/http) that no earlier test
// noticed, and passes on the real code.

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let counter = 0;
const newKey = () => `mutaudit-${process.pid}-${Date.now()}-${++counter}`;

const app = Fastify({ forceCloseConnections: true });
const runs = new Map<string, number>();
const ran = (name: string) => runs.set(name, (runs.get(name) ?? 0) + 1);
let url = '';
const seen: string[] = [];

beforeAll(async () => {
  await app.register(idempotency, {
    store: createMemoryStore(),
    scope: () => ({ principal: 'tenant-a' }),
    maxBodyBytes: 64,
    onWarning: () => {},
  });
  app.post('/limit', async (request, reply) => {
    ran('limit');
    return reply.code(201).send({ got: request.body });
  });
  // An onSend hook that envelopes every payload but a stream (it lets the route's stream
  // through): a replay of the stream comes to it as a Web Response, which it replaces.
  app.post(
    '/streamed',
    {
      onSend: async (_request, _reply, payload) =>
        payload instanceof Readable ? payload : JSON.stringify({ enveloped: true }),
    },
    async (_request, reply) => {
      ran('streamed');
      async function* chunks() {
        for (const part of ['one\n', 'two\n', 'three\n']) {
          yield part;
          await sleep(10);
        }
      }
      return reply
        .code(201)
        .header('location', '/streamed/1')
        .type('text/plain')
        .send(Readable.from(chunks()));
    },
  );
  // Notes what its onSend hook is handed, and whether the reply says it is a replay.
  app.post(
    '/seen',
    {
      onSend: async (_request, reply, payload) => {
        const kind =
          payload instanceof Response
            ? 'Response'
            : Buffer.isBuffer(payload)
              ? 'Buffer'
              : typeof payload;
        seen.push(`${reply.statusCode} ${kind} ${String(reply.getHeader('idempotent-replayed'))}`);
        return payload;
      },
    },
    async (_request, reply) => {
      ran('seen');
      return reply.code(201).send({ ok: true });
    },
  );
  url = await app.listen({ port: 0, host: '127.0.0.1' });
});
afterAll(() => app.close());

describe('@idem/fastify mutation audit', () => {
  it('takes a body of exactly maxBodyBytes (413 only past it)', async () => {
    const exact = Buffer.from(JSON.stringify({ pad: 'x'.repeat(54) }));
    expect(exact.length).toBe(64);
    const headers = { 'content-type': 'application/json' };
    const ok = await send(url, '/limit', { key: newKey(), body: exact, headers });
    expect(ok.status).toBe(201);
    const over = Buffer.from(JSON.stringify({ pad: 'x'.repeat(55) }));
    const refused = await send(url, '/limit', { key: newKey(), body: over, headers });
    expect(refused.status).toBe(413);
    expect(runs.get('limit')).toBe(1);
  });

  it("keeps a streamed replay's status and headers behind an onSend hook that replaces it", async () => {
    const key = newKey();
    const first = await send(url, '/streamed', { key, body: {} });
    expect([first.status, first.body.toString()]).toEqual([201, 'one\ntwo\nthree\n']);
    const replay = await send(url, '/streamed', { key, body: {} });
    // The hook changed the body only: never a 200 the client would take for another answer.
    expect(replay.status).toBe(201);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.headers.location).toBe('/streamed/1');
    expect(runs.get('streamed')).toBe(1);
  });

  // README ("Status codes"): what an onSend hook is handed, so that it can let replays through.
  it("hands onSend a one-chunk replay and the plugin's answers as a Buffer, marked on the reply", async () => {
    const key = newKey();
    await send(url, '/seen', { key, body: { a: 1 } });
    await send(url, '/seen', { key, body: { a: 1 } });
    await send(url, '/seen', { key, body: { a: 2 } });
    expect(seen).toEqual(['201 string undefined', '201 Buffer true', '422 Buffer undefined']);
    expect(runs.get('seen')).toBe(1);
  });
});
