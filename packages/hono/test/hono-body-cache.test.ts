import { type ServerType, serve } from '@hono/node-server';
import { createMemoryStore } from '@idem/store-memory';
import { type Context, Hono } from 'hono';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { offerBodyToHono } from '../src/body-cache.js';
import { idempotency } from '../src/index.js';

// On @hono/node-server the middleware reads the body from the Node request for the
// fingerprint; a JSON body is handed to Hono's body cache as its text, so that the handler's
// `c.req.json()` does not read it again through a Web `Request`. Whatever the handler reads,
// and however, it gets what it gets without the middleware.

type Read = (c: Context) => Promise<unknown>;
const reads: Record<string, Read> = {
  json: (c) => c.req.json(),
  text: (c) => c.req.text(),
  arrayBuffer: async (c) => [...new Uint8Array(await c.req.arrayBuffer())],
  blob: async (c) => {
    const blob = await c.req.blob();
    return { type: blob.type, bytes: [...new Uint8Array(await blob.arrayBuffer())] };
  },
  'text then arrayBuffer': async (c) => [
    await c.req.text(),
    [...new Uint8Array(await c.req.arrayBuffer())],
  ],
  parseBody: (c) => c.req.parseBody(),
  raw: (c) => c.req.raw.text(),
  'raw arrayBuffer after json': async (c) => [
    await c.req.json(),
    [...new Uint8Array(await c.req.raw.arrayBuffer())],
  ],
  incoming: async (c) => {
    const chunks: Buffer[] = [];
    for await (const chunk of (c.env as { incoming: AsyncIterable<Buffer> }).incoming)
      chunks.push(chunk);
    return [...Buffer.concat(chunks)];
  },
};

const encoder = new TextEncoder();
const bodies: [name: string, type: string, bytes: Uint8Array][] = [
  ['json', 'application/json', encoder.encode('{"sku":"A-1","qty":2,"note":"café ✓"}')],
  ['json with charset', 'application/json; charset=UTF-8', encoder.encode('[1,2,3]')],
  [
    'json with a byte order mark',
    'application/json',
    new Uint8Array([0xef, 0xbb, 0xbf, ...encoder.encode('{"a":1}')]),
  ],
  ['json that is not UTF-8', 'application/json', new Uint8Array([0x22, 0xff, 0xfe, 0x22])],
  ['json that does not parse', 'application/json', encoder.encode('{"a":')],
  ['text', 'text/plain', encoder.encode('plain text')],
  ['form', 'application/x-www-form-urlencoded', encoder.encode('a=1&b=two')],
];

const servers: ServerType[] = [];
let plain = '';
let guarded = '';
/** Whether the guarded handler's Web `Request` was read, by route. */
const rawRead = new Map<string, boolean>();

function app(withIdempotency: boolean): Hono {
  const hono = new Hono();
  if (withIdempotency) {
    hono.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
  }
  for (const [name, read] of Object.entries(reads)) {
    hono.post(`/${name.replaceAll(' ', '-')}`, async (c) => {
      let value: unknown;
      try {
        value = await read(c);
      } catch (error) {
        value = { failed: (error as Error).name };
      }
      if (withIdempotency) rawRead.set(name, c.req.raw.bodyUsed);
      return c.json({ value });
    });
  }
  return hono;
}

beforeAll(async () => {
  const listen = (hono: Hono) =>
    new Promise<string>((resolve) => {
      servers.push(
        serve({ fetch: hono.fetch, port: 0, hostname: '127.0.0.1' }, (info) =>
          resolve(`http://127.0.0.1:${info.port}`),
        ),
      );
    });
  plain = await listen(app(false));
  guarded = await listen(app(true));
});
afterAll(() =>
  Promise.all(
    servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
  ),
);

let keys = 0;
async function post(base: string, read: string, type: string, bytes: Uint8Array, key = true) {
  const response = await fetch(`${base}/${read.replaceAll(' ', '-')}`, {
    method: 'POST',
    headers: { 'content-type': type, ...(key ? { 'idempotency-key': `k${++keys}` } : {}) },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
  expect(response.status).toBe(200);
  return response.json();
}

describe('@idem/hono hands the body it read to Hono', () => {
  it('gives the handler the same body, whatever it reads and however', async () => {
    for (const [name, type, bytes] of bodies) {
      for (const read of Object.keys(reads)) {
        if (read === 'raw arrayBuffer after json') continue;
        const without = await post(plain, read, type, bytes, false);
        // Twice: the first request of a Hono request class only starts the probe.
        for (let i = 0; i < 2; i++) {
          expect(await post(guarded, read, type, bytes), `${name}, ${read}`).toEqual(without);
        }
      }
    }
  });

  it("serves a JSON body from Hono's cache: the handler's Web Request is never read", async () => {
    const body = encoder.encode('{"sku":"A-1"}');
    await post(guarded, 'json', 'application/json', body);
    await post(guarded, 'json', 'application/json', body);
    expect(rawRead.get('json')).toBe(false);
    // Not for a body whose cached text would not give its bytes back: the ordinary way.
    await post(guarded, 'json', 'application/json', bodies[2]![2]);
    expect(rawRead.get('json')).toBe(true);
  });

  it('leaves c.req.raw unread when the handler reads a JSON body through Hono', async () => {
    // Without the middleware, c.req.json() consumes c.req.raw: a later raw read fails.
    const bytes = bodies[0]![2];
    const without = await post(
      plain,
      'raw arrayBuffer after json',
      'application/json',
      bytes,
      false,
    );
    expect(without).toEqual({ value: { failed: 'TypeError' } });
    await post(guarded, 'raw arrayBuffer after json', 'application/json', bytes);
    const guardedRead = await post(
      guarded,
      'raw arrayBuffer after json',
      'application/json',
      bytes,
    );
    expect(guardedRead).toEqual({
      value: [JSON.parse(new TextDecoder().decode(bytes)), [...bytes]],
    });
  });
});

describe('offerBodyToHono', () => {
  // A Hono whose request rebuilds readers from a cached text without the media type (as
  // releases before the fix did): the probe refuses it, nothing is ever cached.
  class OldHonoRequest {
    bodyCache: Record<string, Promise<unknown> | undefined> = {};
    constructor(readonly raw: Request) {}
    #cached(key: 'text' | 'json' | 'arrayBuffer' | 'blob'): Promise<unknown> {
      const cached = this.bodyCache[key];
      if (cached) return cached;
      for (const any in this.bodyCache)
        return (this.bodyCache[any] as Promise<BodyInit>).then((body) => new Response(body)[key]());
      this.bodyCache[key] = this.raw[key]();
      return this.bodyCache[key] as Promise<unknown>;
    }
    text = () => this.#cached('text');
    json = () => this.#cached('json');
    arrayBuffer = () => this.#cached('arrayBuffer');
    blob = () => this.#cached('blob');
  }

  it('caches nothing in a Hono whose cached text would not give a blob its media type', async () => {
    const body = { kind: 'json', value: { a: 1 }, bytes: encoder.encode('{"a":1}') } as const;
    const context = (): Context => {
      const raw = new Request('http://x/', { method: 'POST', body: '{"a":1}' });
      return { req: new OldHonoRequest(raw) } as unknown as Context;
    };
    offerBodyToHono(context(), body);
    await new Promise((resolve) => setTimeout(resolve, 50));
    for (let i = 0; i < 3; i++) {
      const c = context();
      offerBodyToHono(c, body);
      expect(c.req.bodyCache).toEqual({});
    }
  });
});
