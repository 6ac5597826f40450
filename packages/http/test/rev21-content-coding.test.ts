import { brotliCompressSync, constants, deflateSync, gzipSync } from 'node:zlib';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { acceptsCodings, platform } from '../src/content-coding.js';
import { type HttpIdempotencyOptions, PROBLEM_TYPES, withIdempotency } from '../src/index.js';

// rev21 (hono rev10-content-coding): a compressing middleware mounted after idem compresses
// the body before it is recorded. A retry whose Accept-Encoding refuses the recorded coding is
// given the body decoded (no Content-Encoding), or a 406 problem when it cannot be decoded,
// never the encoded bytes.

const TEXT = 'x'.repeat(5_000);

interface Recorded {
  status?: number;
  body: Uint8Array | null;
  headers: Record<string, string>;
}

function server(recorded: Recorded, options: Partial<HttpIdempotencyOptions> = {}) {
  let runs = 0;
  const handler = withIdempotency(
    async () => {
      runs++;
      return new Response(recorded.body as Uint8Array<ArrayBuffer> | null, {
        status: recorded.status ?? 201,
        headers: recorded.headers,
      });
    },
    { store: createMemoryStore(), scope: 'global', onWarning: () => {}, ...options },
  );
  const send = async (acceptEncoding: string | undefined, headers: Record<string, string> = {}) => {
    const response = await handler(
      new Request('http://api.test/report', {
        method: 'POST',
        headers: {
          'idempotency-key': 'k-1',
          ...(acceptEncoding === undefined ? {} : { 'accept-encoding': acceptEncoding }),
          ...headers,
        },
      }),
    );
    const bytes = new Uint8Array(await response.arrayBuffer());
    return {
      status: response.status,
      replayed: response.headers.get('idempotent-replayed') === 'true',
      coding: response.headers.get('content-encoding'),
      vary: response.headers.get('vary'),
      etag: response.headers.get('etag'),
      type: response.headers.get('content-type'),
      bytes,
      text: new TextDecoder().decode(bytes),
    };
  };
  return { send, runs: () => runs };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('rev21 @idem/http: Accept-Encoding as RFC 9110 12.5.3 reads it', () => {
  it.each([
    [undefined, true],
    ['gzip', true],
    ['GZIP', true],
    ['x-gzip', true],
    ['deflate, gzip;q=0.001', true],
    ['*', true],
    ['br, *;q=0.5', true],
    ['gzip ;q=1', true],
    ['', false],
    [' ', false],
    [',,', false],
    ['identity', false],
    ['gzip;q=0', false],
    ['gzip;q=0.000', false],
    ['*;q=0', false],
    ['br, *;q=0', false],
    ['gzip;q=0, *', false],
    ['gzip, gzip;q=0', false],
    ['gzip;q=abc', false],
    ['gzip;q=1.5', false],
    ['gzip;q=', false],
    ['gzip;q', false],
    ['"gzip"', false],
    ['gzip/1', false],
  ] as const)('Accept-Encoding %j takes gzip: %s', (field, taken) => {
    expect(acceptsCodings(field, ['gzip'])).toBe(taken);
  });

  it('a list of codings is taken only whole; x-gzip recorded is gzip', () => {
    expect(acceptsCodings('gzip, br', ['gzip', 'br'])).toBe(true);
    expect(acceptsCodings('gzip', ['gzip', 'br'])).toBe(false);
    expect(acceptsCodings('gzip', ['gzip'])).toBe(true);
  });
});

describe('rev21 @idem/http: a recorded Content-Encoding the retry refuses', () => {
  it('gzip: decoded for identity, with Vary and a weak ETag; as recorded for gzip and no field', async () => {
    const gz = gzipSync(TEXT);
    const { send, runs } = server({
      body: gz,
      headers: { 'content-encoding': 'gzip', 'content-type': 'text/plain', etag: '"v1"' },
    });
    const first = await send('gzip');
    expect([first.status, first.coding]).toEqual([201, 'gzip']);
    const identity = await send('identity');
    expect(identity).toMatchObject({
      status: 201,
      replayed: true,
      coding: null,
      vary: 'accept-encoding',
      etag: 'W/"v1"',
      type: 'text/plain',
      text: TEXT,
    });
    const gzip = await send('gzip, deflate');
    expect(gzip).toMatchObject({ status: 201, replayed: true, coding: 'gzip', etag: '"v1"' });
    expect(Buffer.from(gzip.bytes).equals(gz)).toBe(true);
    // No Accept-Encoding: any coding is acceptable (RFC 9110 12.5.3).
    expect((await send(undefined)).coding).toBe('gzip');
    expect((await send('')).text).toBe(TEXT);
    // Identity refused as well: still the decoded body (readable), never the gzip.
    expect(await send('identity;q=0, *;q=0')).toMatchObject({
      status: 201,
      coding: null,
      text: TEXT,
    });
    expect(runs()).toBe(1);
  });

  it('deflate, br, x-gzip and a chain of two are decoded; Vary keeps what it named', async () => {
    const cases: [string, Uint8Array][] = [
      ['deflate', deflateSync(TEXT)],
      ['br', brotliCompressSync(TEXT)],
      ['X-Gzip', gzipSync(TEXT)],
      ['deflate, gzip', gzipSync(deflateSync(TEXT))],
    ];
    for (const [coding, body] of cases) {
      const { send, runs } = server({
        body,
        headers: { 'content-encoding': coding, vary: 'Origin' },
      });
      await send(undefined);
      expect(await send('identity'), coding).toMatchObject({
        status: 201,
        coding: null,
        vary: 'Origin, accept-encoding',
        text: TEXT,
      });
      expect(runs()).toBe(1);
    }
  });

  it('a body that does not decode is a 406 problem, never the bytes; a retry taking gzip still gets them', async () => {
    const whole = gzipSync(TEXT);
    const broken = whole.subarray(0, whole.length - 4);
    const { send, runs } = server({ body: broken, headers: { 'content-encoding': 'gzip' } });
    await send(undefined);
    const refused = await send('identity');
    expect(refused).toMatchObject({ status: 406, coding: null, vary: 'accept-encoding' });
    expect(JSON.parse(refused.text)).toMatchObject({
      type: PROBLEM_TYPES.codingNotAcceptable,
      status: 406,
    });
    expect(refused.text).toMatch(/does not decode/);
    const taken = await send('gzip');
    expect(taken).toMatchObject({ status: 201, replayed: true, coding: 'gzip' });
    expect(Buffer.from(taken.bytes).equals(Buffer.from(broken))).toBe(true);
    // Not gzip at all, and gzip followed by other bytes: refused alike.
    for (const body of [
      new TextEncoder().encode('plain text'),
      Buffer.concat([gzipSync('a'), Buffer.from('junk')]),
    ]) {
      const other = server({ body, headers: { 'content-encoding': 'gzip' } });
      await other.send(undefined);
      expect((await other.send('identity')).status).toBe(406);
    }
    expect(runs()).toBe(1);
  });

  it('a gzip bomb stops at maxOutcomeBytes: 406, memory bounded', async () => {
    // 8 MiB of zeros in about 8 KiB of gzip (1.5 KiB of brotli); the bound is 256 KiB.
    const zeros = Buffer.alloc(8 * 1024 * 1024);
    const bombs = [
      ['gzip', gzipSync(zeros)],
      ['br', brotliCompressSync(zeros, { params: { [constants.BROTLI_PARAM_QUALITY]: 1 } })],
    ] as const;
    for (const [coding, body] of bombs) {
      expect(body.length).toBeLessThan(64 * 1024);
      const { send, runs } = server(
        { body, headers: { 'content-encoding': coding } },
        { maxOutcomeBytes: 256 * 1024 },
      );
      await send(undefined);
      const before = process.memoryUsage().arrayBuffers;
      const refused = await send('identity');
      expect(refused.status, coding).toBe(406);
      expect(refused.text).toMatch(/larger than the bound/);
      // Nowhere near the 8 MiB the body decodes to.
      expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(4 * 1024 * 1024);
      expect(runs()).toBe(1);
    }
  });

  it('a body decoding to exactly the bound is replayed', async () => {
    const body = 'y'.repeat(4096);
    const { send } = server(
      { body: gzipSync(body), headers: { 'content-encoding': 'gzip' } },
      { maxOutcomeBytes: 4096 },
    );
    await send(undefined);
    expect(await send('identity')).toMatchObject({ status: 201, text: body });
  });

  it('a coding nothing here decodes, or br without node:zlib, is a 406', async () => {
    const zstd = server({
      body: new Uint8Array([1, 2, 3]),
      headers: { 'content-encoding': 'zstd' },
    });
    await zstd.send(undefined);
    expect((await zstd.send('gzip, br')).status).toBe(406);
    expect((await zstd.send('zstd')).status).toBe(201);
    const br = server({ body: brotliCompressSync(TEXT), headers: { 'content-encoding': 'br' } });
    await br.send(undefined);
    vi.spyOn(platform, 'zlib').mockReturnValue(undefined);
    const refused = await br.send('gzip');
    expect(refused.status).toBe(406);
    expect(refused.text).toMatch(/cannot decode/);
    vi.restoreAllMocks();
    expect(await br.send('gzip')).toMatchObject({ status: 201, text: TEXT });
  });

  it('a runtime without DecompressionStream answers 406, not a crash', async () => {
    const { send } = server({ body: gzipSync(TEXT), headers: { 'content-encoding': 'gzip' } });
    await send(undefined);
    vi.stubGlobal('DecompressionStream', undefined);
    try {
      expect((await send('identity')).status).toBe(406);
    } finally {
      vi.unstubAllGlobals();
    }
    expect(await send('identity')).toMatchObject({ status: 201, text: TEXT });
  });

  it('gzip and deflate decode without node:zlib (the Web platform only)', async () => {
    const { send } = server({ body: gzipSync(TEXT), headers: { 'content-encoding': 'gzip' } });
    await send(undefined);
    vi.spyOn(platform, 'zlib').mockReturnValue(undefined);
    expect(await send('identity')).toMatchObject({ status: 201, text: TEXT });
  });

  it('an empty body, or a status without one, goes without its Content-Encoding', async () => {
    for (const [status, body] of [
      [201, new Uint8Array(0)],
      [204, null],
    ] as const) {
      const { send, runs } = server({ status, body, headers: { 'content-encoding': 'gzip' } });
      expect((await send(undefined)).status).toBe(status);
      expect(await send('identity')).toMatchObject({
        status,
        replayed: true,
        coding: null,
        text: '',
      });
      expect((await send('gzip')).coding).toBe('gzip');
      expect(runs()).toBe(1);
    }
  });

  it('Content-Encoding: identity is no coding: replayed as recorded', async () => {
    const { send } = server({
      body: new TextEncoder().encode(TEXT),
      headers: { 'content-encoding': 'identity' },
    });
    await send(undefined);
    expect(await send('gzip;q=0, identity')).toMatchObject({
      status: 201,
      coding: 'identity',
      text: TEXT,
    });
  });

  it('a gzip event stream decoded for identity resumes after Last-Event-ID', async () => {
    const events = 'id: 1\ndata: a\n\nid: 2\ndata: b\n\n';
    const { send } = server({
      status: 200,
      body: gzipSync(events),
      headers: { 'content-encoding': 'gzip', 'content-type': 'text/event-stream' },
    });
    await send(undefined);
    // Refused as it is (a gzip stream cannot be cut at an event): 412.
    expect((await send('gzip', { 'last-event-id': '1' })).status).toBe(412);
    expect(await send('identity', { 'last-event-id': '1' })).toMatchObject({
      status: 200,
      coding: null,
      text: 'id: 2\ndata: b\n\n',
    });
  });
});
