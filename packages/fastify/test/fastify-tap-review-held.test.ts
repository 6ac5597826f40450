import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { createGunzip, gzipSync } from 'node:zlib';
import { createIdempotencyHandler, PROBLEM_TYPES } from '@idem/http';
import { headerValue, nodeRequestBody } from '@idem/http/node';
import { createMemoryStore } from '@idem/store-memory';
import type { FastifyRequest } from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AMOUNT,
  closeTapApps,
  head,
  heldCopyBytes,
  OTHER_AMOUNT,
  postJson,
  rawExchange,
  rawPost,
  tapApp,
} from './fastify-tap-review-kit.js';

// Adversarial review of the body tap (3559b7e): attacks that held. Each asserts the
// guarantee it attacked (exactly-once, isolation, bounded memory and time, bad input), so
// it fails if the guarantee breaks later.

afterAll(closeTapApps);

const JSON_TYPE = { 'content-type': 'application/json' };

function chunkedBody(body: string | Uint8Array): RequestInit {
  return {
    body: new ReadableStream({
      start(controller) {
        controller.enqueue(typeof body === 'string' ? new TextEncoder().encode(body) : body);
        controller.close();
      },
    }),
    duplex: 'half',
  } as RequestInit;
}

describe('tap review (held): isolation', () => {
  it('pipelined requests on one socket: each is fingerprinted by its own bytes', async () => {
    let runs = 0;
    const { port } = await tapApp((app) => {
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const k = (key: string) => ({ ...JSON_TYPE, 'idempotency-key': key });
    const responses = await rawExchange(port, [
      rawPost('/charges', k('k1'), AMOUNT) +
        rawPost('/charges', k('k1'), OTHER_AMOUNT) +
        rawPost('/charges', k('k2'), OTHER_AMOUNT) +
        rawPost('/charges', k('k2'), OTHER_AMOUNT) +
        rawPost('/charges', k('k2'), AMOUNT, true),
    ]);
    expect(responses.map((r) => r.status)).toEqual([200, 422, 200, 200, 422]);
    expect(responses[3]?.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(2);
  });

  it('a pipelined request answered early by a hook copies nothing and lends nothing to the next', async () => {
    let runs = 0;
    const held: number[] = [];
    const { port } = await tapApp((app) => {
      // After the plugin's onRequest: the copy has started when this hook answers.
      app.addHook('onRequest', async (request, reply) => {
        if (request.headers['x-deny'] !== undefined) return reply.code(401).send({ no: true });
      });
      app.addHook('onResponse', async (request) => {
        held.push(heldCopyBytes(request));
      });
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const k1 = { ...JSON_TYPE, 'idempotency-key': 'k1' };
    const responses = await rawExchange(port, [
      rawPost('/charges', { ...k1, 'x-deny': '1' }, AMOUNT) +
        rawPost('/charges', k1, OTHER_AMOUNT) +
        rawPost('/charges', k1, OTHER_AMOUNT) +
        rawPost('/charges', k1, AMOUNT, true),
    ]);
    expect(responses.map((r) => r.status)).toEqual([401, 200, 200, 422]);
    expect(responses[2]?.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
    expect(held[0]).toBe(0);
  });

  it('concurrent requests on separate connections never share a copy', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.post('/charges', async () => {
        await sleep(5);
        return { runs: ++runs };
      });
    });
    const ids = Array.from({ length: 16 }, (_, i) => i);
    const own = (i: number) => `{"i":${i},"amount":9007199254740993}`;
    const alike = (i: number) => `{"i":${i},"amount":9007199254740992}`;
    const firsts = await Promise.all(ids.map((i) => postJson(`${url}/charges`, `k${i}`, own(i))));
    expect(firsts.map((r) => r.status)).toEqual(ids.map(() => 200));
    const retries = await Promise.all(
      ids.flatMap((i) => [
        postJson(`${url}/charges`, `k${i}`, own(i)),
        postJson(`${url}/charges`, `k${i}`, alike(i)),
      ]),
    );
    for (const i of ids) {
      expect(retries[2 * i]?.headers.get('idempotent-replayed')).toBe('true');
      expect(retries[2 * i + 1]?.status).toBe(422);
    }
    expect(runs).toBe(16);
  });
});

describe('tap review (held): bounded time and streams', () => {
  it('a first attempt that stalls mid-body holds no key; when it ends it gets the replay', async () => {
    let runs = 0;
    const { url, port } = await tapApp((app) => {
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const headers = { ...JSON_TYPE, 'idempotency-key': 'k1' };
    // The stalled attempt: head and half the body, the rest after the retry has run.
    const stalled = rawExchange(port, [
      head('/charges', headers, AMOUNT.length, true),
      AMOUNT.slice(0, 10),
      300,
      AMOUNT.slice(10),
    ]);
    await sleep(50);
    const retry = await postJson(`${url}/charges`, 'k1', AMOUNT);
    expect(retry.status).toBe(200);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    const [late] = await stalled;
    expect(late?.status).toBe(200);
    expect(late?.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });

  it('without a hook that puts bytes back, the same body split otherwise on the wire replays', async () => {
    let runs = 0;
    const { port } = await tapApp((app) => {
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const headers = { ...JSON_TYPE, 'idempotency-key': 'k1' };
    const at = (split: number) =>
      rawExchange(port, [
        head('/charges', headers, AMOUNT.length, true),
        AMOUNT.slice(0, split),
        30,
        AMOUNT.slice(split),
      ]);
    expect((await at(3))[0]?.status).toBe(200);
    const [retry] = await at(17);
    expect(retry?.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });

  it('an async onRequest hook before the plugin (the body waits in the buffer) is still copied whole', async () => {
    let runs = 0;
    const { url } = await tapApp(
      (app) => {
        app.post('/charges', async () => ({ runs: ++runs }));
      },
      {
        before: (app) => {
          app.addHook('onRequest', async () => {
            await sleep(40);
          });
        },
      },
    );
    expect((await postJson(`${url}/charges`, 'k1', AMOUNT)).status).toBe(200);
    expect((await postJson(`${url}/charges`, 'k1', OTHER_AMOUNT)).status).toBe(422);
    expect(runs).toBe(1);
  });

  it('the copy leaves a body the route reads later paused and whole (no flowing mode)', async () => {
    const flowing: (boolean | null)[] = [];
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.addContentTypeParser('application/octet-stream', (_request, _payload, done) =>
        done(null, undefined),
      );
      app.addHook('preHandler', async (request) => {
        flowing.push(request.raw.readableFlowing);
      });
      app.post('/uploads', async (request: FastifyRequest) => {
        await sleep(30);
        let size = 0;
        for await (const chunk of request.raw) size += (chunk as Buffer).length;
        return { runs: ++runs, size };
      });
    });
    const upload = new Uint8Array(300_000).fill(7);
    const response = await postJson(`${url}/uploads`, 'k1', upload, {
      'content-type': 'application/octet-stream',
    });
    expect(await response.json()).toEqual({ runs: 1, size: 300_000 });
    expect(flowing).toEqual([null]);
  });

  it('a body the app reads from request.raw in preValidation is copied and told apart', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.addContentTypeParser('application/x-raw', (_request, _payload, done) =>
        done(null, undefined),
      );
      app.addHook('preValidation', async (request) => {
        const parts: Buffer[] = [];
        for await (const chunk of request.raw) parts.push(chunk as Buffer);
        request.body = Buffer.concat(parts).toString('utf8');
      });
      app.post('/raw', async () => ({ runs: ++runs }));
    });
    const headers = { 'content-type': 'application/x-raw' };
    expect((await postJson(`${url}/raw`, 'k1', 'pay alice', headers)).status).toBe(200);
    expect((await postJson(`${url}/raw`, 'k1', 'pay mallory', headers)).status).toBe(422);
    const retry = await postJson(`${url}/raw`, 'k1', 'pay alice', headers);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });
});

describe('tap review (held): bounded memory and the limits', () => {
  const MAX = 64;
  const exact = (amount: string) => {
    const base = `{"amount":${amount},"pad":""}`;
    return `{"amount":${amount},"pad":"${'p'.repeat(MAX - base.length)}"}`;
  };

  it('a body of exactly maxBodyBytes (declared or chunked) is copied whole; one byte more is 413', async () => {
    let runs = 0;
    const { url } = await tapApp(
      (app) => {
        app.post('/charges', async () => ({ runs: ++runs }));
      },
      { maxBodyBytes: MAX },
    );
    const body = exact('9007199254740993');
    expect(body.length).toBe(MAX);
    const headers = { ...JSON_TYPE, 'idempotency-key': 'k1' };
    const send = (init: RequestInit, key = 'k1') =>
      fetch(`${url}/charges`, {
        method: 'POST',
        headers: { ...headers, 'idempotency-key': key },
        ...init,
      });
    expect((await send({ body })).status).toBe(200);
    expect((await send(chunkedBody(body))).headers.get('idempotent-replayed')).toBe('true');
    expect((await send(chunkedBody(exact('9007199254740992')))).status).toBe(422);
    for (const init of [{ body: `${body} ` }, chunkedBody(`${body} `)]) {
      const over = await send(init, 'k2');
      expect(over.status).toBe(413);
      expect(((await over.json()) as { type: string }).type).toBe(PROBLEM_TYPES.bodyTooLarge);
    }
    expect(runs).toBe(1);
  });

  it('a body of exactly the route bodyLimit is copied whole and told apart', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.post('/charges', { bodyLimit: MAX }, async () => ({ runs: ++runs }));
    });
    expect((await postJson(`${url}/charges`, 'k1', exact('9007199254740993'))).status).toBe(200);
    const other = await fetch(`${url}/charges`, {
      method: 'POST',
      headers: { ...JSON_TYPE, 'idempotency-key': 'k1' },
      ...chunkedBody(exact('9007199254740992')),
    });
    expect(other.status).toBe(422);
    expect(runs).toBe(1);
  });

  it('nothing is copied of a body Fastify never reads (415) nor of one declared past the cap (413)', async () => {
    const held: number[] = [];
    const { url } = await tapApp(
      (app) => {
        app.addHook('onResponse', async (request) => {
          held.push(heldCopyBytes(request));
        });
        app.post('/charges', async () => ({ ok: true }));
      },
      { maxBodyBytes: 1000 },
    );
    const unsupported = await postJson(`${url}/charges`, 'k1', 'x'.repeat(500), {
      'content-type': 'application/x-unknown',
    });
    expect(unsupported.status).toBe(415);
    const declared = await postJson(`${url}/charges`, 'k1', `"${'x'.repeat(5000)}"`);
    expect(declared.status).toBe(413);
    expect(held).toEqual([0, 0]);
  });
});

describe('tap review (held): bad and edge input', () => {
  it('Content-Length: 0 with a JSON type: Fastify 400, no key taken', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    const empty = await postJson(`${url}/charges`, 'k1', '');
    expect(empty.status).toBe(400);
    expect(((await empty.json()) as { code: string }).code).toBe('FST_ERR_CTP_EMPTY_JSON_BODY');
    expect((await postJson(`${url}/charges`, 'k1', AMOUNT)).status).toBe(200);
    expect(runs).toBe(1);
  });

  it('an empty chunked text body is no body: the retry replays, a body after it is 422', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.post('/notes', async () => ({ runs: ++runs }));
    });
    const send = (body: string) =>
      fetch(`${url}/notes`, {
        method: 'POST',
        headers: { 'content-type': 'text/plain', 'idempotency-key': 'k1' },
        ...chunkedBody(body),
      });
    expect((await send('')).status).toBe(200);
    expect((await send('')).headers.get('idempotent-replayed')).toBe('true');
    expect((await send('x')).status).toBe(422);
    expect(runs).toBe(1);
  });

  it('text bodies that decode alike (invalid UTF-8) are told apart by their bytes', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.post('/notes', async (request) => ({ runs: ++runs, body: request.body }));
    });
    const text = { 'content-type': 'text/plain' };
    const first = await postJson(`${url}/notes`, 'k1', new Uint8Array([0x61, 0xff]), text);
    expect(await first.json()).toEqual({ runs: 1, body: 'a\ufffd' });
    expect((await postJson(`${url}/notes`, 'k1', new Uint8Array([0x61, 0xfe]), text)).status).toBe(
      422,
    );
    expect(runs).toBe(1);
  });

  it('a parseAs string parser of the app: its bodies are fingerprinted as sent', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.addContentTypeParser('text/csv', { parseAs: 'string' }, (_request, text, done) =>
        done(null, (text as string).trim()),
      );
      app.post('/rows', async () => ({ runs: ++runs }));
    });
    const csv = { 'content-type': 'text/csv' };
    expect((await postJson(`${url}/rows`, 'k1', 'a,b\n', csv)).status).toBe(200);
    // The parsed strings are alike; the bytes as sent are not.
    expect((await postJson(`${url}/rows`, 'k1', 'a,b\n\n', csv)).status).toBe(422);
    expect(
      (await postJson(`${url}/rows`, 'k1', 'a,b\n', csv)).headers.get('idempotent-replayed'),
    ).toBe('true');
    expect(runs).toBe(1);
  });

  it('a stream-reading JSON parser of the app (Buffers): the copy is whole and used', async () => {
    let runs = 0;
    const { url } = await tapApp((app) => {
      app.removeContentTypeParser('application/json');
      app.addContentTypeParser(
        'application/json',
        async (_request: FastifyRequest, payload: Readable) => {
          const parts: Buffer[] = [];
          for await (const chunk of payload) parts.push(chunk as Buffer);
          return JSON.parse(Buffer.concat(parts).toString('utf8')) as unknown;
        },
      );
      app.post('/charges', async () => ({ runs: ++runs }));
    });
    expect((await postJson(`${url}/charges`, 'k1', '{"to":"alice","to":"mallory"}')).status).toBe(
      200,
    );
    expect((await postJson(`${url}/charges`, 'k1', '{"to":"mallory"}')).status).toBe(422);
    expect(runs).toBe(1);
  });
});

describe('tap review (held): the same fingerprint as @idem/hono and @idem/express', () => {
  // Hono reads the body as sent (a clone of the Request, or the Node request); Express
  // mounted before its parsers peeks the Node request (nodeRequestBody). Both come to
  // bodyFromBytes over the bytes as sent: the fingerprint Fastify stores must be theirs.
  const gzipped = new Uint8Array(gzipSync(AMOUNT));
  const cases: [string, Record<string, string>, string | Uint8Array<ArrayBuffer>][] = [
    ['canonical JSON', JSON_TYPE, '{ "b": [1, 2.50], "a": {"x": "\\u00e9"} }'],
    ['integer past 2^53', JSON_TYPE, AMOUNT],
    ['repeated member', JSON_TYPE, '{"to":"alice","to":"mallory"}'],
    ['JSON with a BOM', JSON_TYPE, '\ufeff{"a":1}'],
    ['text', { 'content-type': 'text/plain; charset=utf-8' }, 'héllo'],
    ['gzip as sent', { ...JSON_TYPE, 'content-encoding': 'gzip' }, gzipped],
  ];

  async function fastifyPrint(
    headers: Record<string, string>,
    body: string | Uint8Array<ArrayBuffer>,
  ) {
    let storageKey = '';
    const { url, store } = await tapApp((app) => {
      app.addHook('preParsing', async (request, _reply, payload) => {
        if (request.headers['content-encoding'] !== 'gzip') return payload;
        const decoded = createGunzip() as ReturnType<typeof createGunzip> & {
          receivedEncodedLength: number;
        };
        decoded.receivedEncodedLength = Number(request.headers['content-length']);
        return payload.pipe(decoded);
      });
      app.post('/charges', async (request) => {
        storageKey = request.idempotency?.storageKey ?? '';
        return { ok: true };
      });
    });
    const response = await postJson(`${url}/charges`, 'k1', body, headers);
    expect(response.status).toBe(200);
    return (await store.get(storageKey))?.fingerprint;
  }

  async function fetchPrint(
    headers: Record<string, string>,
    body: string | Uint8Array<ArrayBuffer>,
  ) {
    const store = createMemoryStore();
    const handler = createIdempotencyHandler({ store, scope: 'global', onWarning: () => {} });
    let storageKey = '';
    const response = await handler.handle(
      new Request('http://127.0.0.1/charges', {
        method: 'POST',
        headers: { ...headers, 'idempotency-key': 'k1' },
        body,
      }),
      async (_request, context) => {
        storageKey = context?.storageKey ?? '';
        return Response.json({ ok: true });
      },
    );
    expect(response.status).toBe(200);
    return (await store.get(storageKey))?.fingerprint;
  }

  async function nodePrint(
    headers: Record<string, string>,
    body: string | Uint8Array<ArrayBuffer>,
  ) {
    const store = createMemoryStore();
    const handler = createIdempotencyHandler<IncomingMessage>({
      store,
      scope: 'global',
      onWarning: () => {},
    });
    let storageKey = '';
    const server = createServer(async (req, res) => {
      const decision = await handler.begin({
        native: req,
        method: req.method ?? 'GET',
        url: req.url ?? '/',
        header: (name) => headerValue(req.headers, name),
        readBody: (limit) => nodeRequestBody(req, undefined, limit),
      });
      if (decision.action === 'execute') storageKey = decision.recorder.context.storageKey;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      await postJson(`http://127.0.0.1:${port}/charges`, 'k1', body, headers);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    return (await store.get(storageKey))?.fingerprint;
  }

  for (const [name, headers, body] of cases) {
    it(name, async () => {
      const reference = await fetchPrint(headers, body);
      expect(reference).toMatch(/^[0-9a-f]{64}$/);
      expect(await nodePrint(headers, body)).toBe(reference);
      expect(await fastifyPrint(headers, body)).toBe(reference);
    });
  }
});
