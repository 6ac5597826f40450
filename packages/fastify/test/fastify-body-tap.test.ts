import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGunzip, gzipSync } from 'node:zlib';
import { PROBLEM_TYPES } from '@idem/http';
import { createMemoryStore } from '@idem/store-memory';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { idempotency } from '../src/index.js';
import { heldCopyBytes } from './fastify-tap-review-kit.js';

// The plugin copies the body as it comes in (the Node request's push, wrapped from
// onRequest) and fingerprints those bytes: these are the cases around that copy.

const apps: FastifyInstance[] = [];
afterAll(() => Promise.all(apps.map((app) => app.close())));

const AMOUNT = '{"amount":9007199254740993}';
const OTHER_AMOUNT = '{"amount":9007199254740992}';

async function appWith(
  setup: (app: FastifyInstance) => void | Promise<void>,
  options: {
    maxBodyBytes?: number;
    bodyLimit?: number;
    before?: (app: FastifyInstance) => void;
  } = {},
) {
  const app = Fastify(options.bodyLimit === undefined ? {} : { bodyLimit: options.bodyLimit });
  apps.push(app);
  const store = createMemoryStore();
  options.before?.(app);
  await app.register(idempotency, {
    store,
    scope: 'global',
    onWarning: () => {},
    ...(options.maxBodyBytes === undefined ? {} : { maxBodyBytes: options.maxBodyBytes }),
  });
  await setup(app);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return { app, store, url: `http://127.0.0.1:${port}` };
}

function post(url: string, key: string | undefined, body: BodyInit, headers = {}) {
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key === undefined ? {} : { 'idempotency-key': key }),
      ...headers,
    },
    body,
  });
}

/** A body sent in chunks with no Content-Length (chunked transfer coding). */
function chunked(...parts: string[]): { body: ReadableStream<Uint8Array>; duplex: 'half' } {
  return {
    body: new ReadableStream({
      start(controller) {
        for (const part of parts) controller.enqueue(new TextEncoder().encode(part));
        controller.close();
      },
    }),
    duplex: 'half',
  };
}

/** Whether the plugin is copying the request's body, at preParsing: 1 if so, else 0. */
function copying(request: object): number {
  const symbol = Object.getOwnPropertySymbols(request).find(
    (s) => s.description === '@idem/fastify incoming',
  );
  if (!symbol) throw new Error('the request carries no @idem/fastify slot');
  const slot = (request as Record<symbol, { tap?: unknown } | false | null>)[symbol];
  return slot && typeof slot.tap === 'object' ? 1 : 0;
}

function watchCopying(app: FastifyInstance, seen: number[]) {
  app.addHook('preParsing', async (request, _reply, payload) => {
    seen.push(copying(request));
    return payload;
  });
}

describe('Fastify body copy: when it is taken', () => {
  it('only for a route with idempotency on, a method that needs a key and a request with a key', async () => {
    const seen: number[] = [];
    const { url } = await appWith((app) => {
      watchCopying(app, seen);
      app.post('/on', async () => ({ ok: true }));
      app.put('/on', async () => ({ ok: true }));
      app.post('/off', { config: { idempotency: false } }, async () => ({ ok: true }));
      app.post('/optional', { config: { idempotency: { required: false } } }, async () => ({
        ok: true,
      }));
    });
    expect((await post(`${url}/on`, 'k1', '{"a":1}')).status).toBe(200);
    expect(seen).toEqual([1]);
    seen.length = 0;
    expect((await post(`${url}/off`, 'k2', '{"a":1}')).status).toBe(200);
    expect((await post(`${url}/optional`, undefined, '{"a":1}')).status).toBe(200);
    const put = await fetch(`${url}/on`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'k3' },
      body: '{"a":1}',
    });
    expect(put.status).toBe(200);
    // A POST without a key on a route that requires one: 400, nothing copied.
    expect((await post(`${url}/on`, undefined, '{"a":1}')).status).toBe(400);
    expect(seen).toEqual([0, 0, 0, 0]);
  });

  it('not for a declared length past maxBodyBytes: 413 unread (Fastify bodyLimit, then maxBodyBytes)', async () => {
    const seen: number[] = [];
    const held: number[] = [];
    const { url } = await appWith(
      (app) => {
        watchCopying(app, seen);
        app.addHook('onResponse', async (request) => {
          held.push(heldCopyBytes(request));
        });
        app.post('/small', { bodyLimit: 20 }, async () => ({ ok: true }));
        app.post('/big', async () => ({ ok: true }));
      },
      { maxBodyBytes: 40 },
    );
    // Fastify's bodyLimit refuses it (answered with the problem by the route's error handler).
    const fastify413 = await post(`${url}/small`, 'k1', `{"pad":"${'x'.repeat(30)}"}`);
    expect(fastify413.status).toBe(413);
    expect(((await fastify413.json()) as { type: string }).type).toBe(PROBLEM_TYPES.bodyTooLarge);
    const idem413 = await post(`${url}/big`, 'k2', `{"pad":"${'x'.repeat(50)}"}`);
    expect(idem413.status).toBe(413);
    expect(((await idem413.json()) as { type: string }).type).toBe(PROBLEM_TYPES.bodyTooLarge);
    // Within maxBodyBytes but past the route's bodyLimit, the copy starts (a content-type
    // parser may have a higher limit than the route: fastify-tap-review finding 3); Fastify
    // answers 413 unread and nothing is held once it did. Past maxBodyBytes, no copy.
    expect(seen).toEqual([1, 0]);
    expect(held).toEqual([0, 0]);
  });
});

describe('Fastify body copy: bounded', () => {
  it("a chunked body past the route bodyLimit keeps Fastify's 413 (with the problem) and nothing stays held", async () => {
    let heldAtEnd = -1;
    const { url } = await appWith((app) => {
      app.addHook('onResponse', async (request) => {
        heldAtEnd = heldCopyBytes(request);
      });
      app.post('/small', { bodyLimit: 20 }, async () => ({ ok: true }));
    });
    const response = await fetch(`${url}/small`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
      ...chunked('{"pad":"', 'x'.repeat(40), '"}'),
    });
    expect(response.status).toBe(413);
    expect(((await response.json()) as { type: string }).type).toBe(PROBLEM_TYPES.bodyTooLarge);
    // Fastify stopped reading at its limit; the request holds no copy once answered.
    expect(heldAtEnd).toBe(0);
  });

  it('a chunked body past maxBodyBytes (below bodyLimit) gets the 413 problem, the key untaken', async () => {
    let runs = 0;
    const { url } = await appWith(
      (app) => {
        app.post('/charges', async () => ({ runs: ++runs }));
      },
      { maxBodyBytes: 30 },
    );
    const big = await fetch(`${url}/charges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
      ...chunked('{"pad":"', 'x'.repeat(40), '"}'),
    });
    expect(big.status).toBe(413);
    expect(((await big.json()) as { type: string }).type).toBe(PROBLEM_TYPES.bodyTooLarge);
    expect(runs).toBe(0);
    // Chunked within the cap: the copy is whole, the ambiguous body is told apart.
    const first = await fetch(`${url}/charges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
      ...chunked('{"amount":', '9007199254740993}'),
    });
    expect(first.status).toBe(200);
    expect((await post(`${url}/charges`, 'k1', OTHER_AMOUNT)).status).toBe(422);
    expect((await post(`${url}/charges`, 'k1', AMOUNT)).headers.get('idempotent-replayed')).toBe(
      'true',
    );
    expect(runs).toBe(1);
  });

  it('a client that leaves mid-body takes no key and leaves nothing behind: the retry runs once', async () => {
    let runs = 0;
    const { url } = await appWith((app) => {
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const { port } = new URL(url);
    await new Promise<void>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => {
        socket.write(
          'POST /charges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
            'Idempotency-Key: k1\r\nContent-Length: 100\r\n\r\n{"amount":90071992',
        );
        setTimeout(() => {
          socket.destroy();
          resolve();
        }, 50);
      });
      socket.on('error', reject);
    });
    await sleep(50);
    const retry = await post(`${url}/charges`, 'k1', AMOUNT);
    expect(retry.status).toBe(200);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    expect(runs).toBe(1);
  });
});

describe('Fastify body copy: other readers of the body', () => {
  it('an invalid JSON body still gets Fastify 400 before any key is taken', async () => {
    let runs = 0;
    const { url } = await appWith((app) => {
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const bad = await post(`${url}/charges`, 'k1', '{"amount":');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { code: string }).code).toBe('FST_ERR_CTP_INVALID_JSON_BODY');
    expect((await post(`${url}/charges`, 'k1', AMOUNT)).status).toBe(200);
    expect(runs).toBe(1);
  });

  it('a preParsing hook that reads later (async) still gets the whole body, and the copy is whole', async () => {
    let runs = 0;
    const bodies: unknown[] = [];
    const { url } = await appWith((app) => {
      app.addHook('preParsing', async (_request, _reply, payload) => {
        await sleep(30);
        return payload;
      });
      app.post('/charges', async (request) => {
        bodies.push(request.body);
        return { runs: ++runs };
      });
    });
    expect((await post(`${url}/charges`, 'k1', '{"amount":1,"note":"é"}')).status).toBe(200);
    expect(bodies).toEqual([{ amount: 1, note: 'é' }]);
    expect((await post(`${url}/charges`, 'k2', AMOUNT)).status).toBe(200);
    expect((await post(`${url}/charges`, 'k2', OTHER_AMOUNT)).status).toBe(422);
    expect(runs).toBe(2);
  });

  it('a Content-Encoding body is fingerprinted as sent (as Express and Hono), whichever side of the plugin its decoding hook is registered', async () => {
    const fingerprints: string[] = [];
    for (const order of ['before', 'after'] as const) {
      let runs = 0;
      let storageKey = '';
      const bodies: unknown[] = [];
      const gunzip = (app: FastifyInstance) =>
        app.addHook('preParsing', async (request, _reply, payload) => {
          if (request.headers['content-encoding'] !== 'gzip') return payload;
          const decoded = createGunzip() as ReturnType<typeof createGunzip> & {
            receivedEncodedLength: number;
          };
          decoded.receivedEncodedLength = 0;
          payload.on('data', (chunk: Buffer) => {
            decoded.receivedEncodedLength += chunk.length;
          });
          return payload.pipe(decoded);
        });
      const { url, store } = await appWith(
        (app) => {
          if (order === 'after') gunzip(app);
          app.post('/charges', async (request) => {
            bodies.push(request.body);
            storageKey = request.idempotency?.storageKey ?? '';
            return { runs: ++runs };
          });
        },
        order === 'before' ? { before: gunzip } : {},
      );
      const packed = gzipSync(AMOUNT, { level: 9 });
      const send = (body: Uint8Array) =>
        post(`${url}/charges`, 'k1', new Uint8Array(body), { 'content-encoding': 'gzip' });
      expect((await send(packed)).status).toBe(200);
      expect((await send(packed)).headers.get('idempotent-replayed')).toBe('true');
      // The same JSON compressed otherwise is other bytes: another request, as elsewhere.
      expect((await send(gzipSync(AMOUNT, { level: 0 }))).status).toBe(422);
      expect(runs).toBe(1);
      expect(JSON.stringify(bodies)).toBe('[{"amount":9007199254740992}]');
      fingerprints.push((await store.get(storageKey))?.fingerprint ?? '');
    }
    // The same fingerprint in both orders: the bytes as sent.
    expect(fingerprints[0]).toMatch(/^[0-9a-f]{64}$/);
    expect(fingerprints[1]).toBe(fingerprints[0]);
  });

  it('a preParsing hook that hands Fastify another stream: the body as sent is read, put back and fingerprinted', async () => {
    let runs = 0;
    const { url } = await appWith((app) => {
      app.addHook('preParsing', async (request, _reply, _payload) => {
        const replaced = Readable.from([Buffer.from('{"fixed":true}')]) as Readable & {
          receivedEncodedLength: number;
        };
        replaced.receivedEncodedLength = Number(request.headers['content-length']);
        return replaced;
      });
      app.post('/charges', async (request) => ({ runs: ++runs, body: request.body }));
    });
    const first = await post(`${url}/charges`, 'k1', AMOUNT);
    expect(await first.json()).toEqual({ runs: 1, body: { fixed: true } });
    // Nobody read the Node request: the plugin reads it as @idem/express does (and puts it
    // back), so another body sent under the key is another request, as on Express and Hono,
    // whatever value the route saw; the same body replays.
    const second = await post(`${url}/charges`, 'k1', OTHER_AMOUNT);
    expect(second.status).toBe(422);
    const retry = await post(`${url}/charges`, 'k1', AMOUNT);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });

  it('a parser that leaves the body to the route (multipart style): the route reads it whole, no copy meanwhile', async () => {
    let runs = 0;
    const heldInRoute: number[] = [];
    const { url } = await appWith((app) => {
      app.addContentTypeParser('multipart/form-data', (_request, _payload, done) =>
        done(null, undefined),
      );
      app.post('/uploads', async (request: FastifyRequest) => {
        heldInRoute.push(heldCopyBytes(request));
        let size = 0;
        for await (const chunk of request.raw) size += (chunk as Buffer).length;
        return { runs: ++runs, size };
      });
    });
    const form = (content: string) =>
      `--b\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n\r\n${content}\r\n--b--\r\n`;
    const upload = form('x'.repeat(200_000));
    const headers = { 'content-type': 'multipart/form-data; boundary=b' };
    const first = await post(`${url}/uploads`, 'k1', upload, headers);
    expect(await first.json()).toEqual({ runs: 1, size: upload.length });
    expect(heldInRoute).toEqual([0]);
    const retry = await post(`${url}/uploads`, 'k1', upload, headers);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    // The plugin read the form (and put it back): another file under the key is 422.
    expect((await post(`${url}/uploads`, 'k1', form('y'.repeat(200_000)), headers)).status).toBe(
      422,
    );
    expect(runs).toBe(1);
  });

  it('a parser that reads the stream itself into another value (a form): the form as sent is fingerprinted, as on Express and Hono', async () => {
    let runs = 0;
    const { url } = await appWith((app) => {
      app.addContentTypeParser(
        'application/x-www-form-urlencoded',
        async (_request: FastifyRequest, payload: AsyncIterable<Buffer>) => {
          let text = '';
          for await (const chunk of payload) text += chunk.toString();
          return Object.fromEntries(new URLSearchParams(text));
        },
      );
      app.post('/forms', async (request) => ({ runs: ++runs, body: request.body }));
    });
    const headers = { 'content-type': 'application/x-www-form-urlencoded' };
    const first = await post(`${url}/forms`, 'k1', 'a=1&b=2', headers);
    expect(await first.json()).toEqual({ runs: 1, body: { a: '1', b: '2' } });
    // The bytes as sent (fastify-tap-review finding 7): reordered fields are another request,
    // as on @idem/express and @idem/hono; the same form replays.
    expect((await post(`${url}/forms`, 'k1', 'b=2&a=1', headers)).status).toBe(422);
    expect((await post(`${url}/forms`, 'k1', 'a=1&b=3', headers)).status).toBe(422);
    const retry = await post(`${url}/forms`, 'k1', 'a=1&b=2', headers);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });

  it('a chunk that is a view into a larger buffer is copied: what its owner writes there later changes nothing', async () => {
    let runs = 0;
    let overwrite: Buffer | undefined;
    const { app } = await appWith((app) => {
      // After Fastify parsed the body, before the fingerprint: the owner reuses its buffer.
      app.addHook('preValidation', async () => {
        overwrite?.fill(0x20);
        overwrite = undefined;
      });
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const send = () => {
      const text = '{"amount":1}';
      const backing = Buffer.alloc(64);
      backing.write(text, 8);
      const view = backing.subarray(8, 8 + text.length);
      return {
        view,
        response: app.inject({
          method: 'POST',
          url: '/charges',
          headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
          payload: view,
        }),
      };
    };
    const first = send();
    overwrite = first.view;
    expect((await first.response).statusCode).toBe(200);
    const retry = await send().response;
    expect(retry.statusCode).toBe(200);
    expect(retry.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });

  it('app.inject: the ambiguous bodies are told apart too', async () => {
    let runs = 0;
    const { app } = await appWith((app) => {
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const inject = (payload: string) =>
      app.inject({
        method: 'POST',
        url: '/charges',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'k1' },
        payload,
      });
    expect((await inject('{"to":"alice","to":"mallory"}')).statusCode).toBe(200);
    expect((await inject('{"to":"mallory"}')).statusCode).toBe(422);
    expect((await inject('{"to":"alice","to":"mallory"}')).headers['idempotent-replayed']).toBe(
      'true',
    );
    expect(runs).toBe(1);
  });
});
