import { brotliCompressSync, gzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { timedOnCpu } from '../../../scripts/loop-lateness.js';
import { PROBLEM_TYPES } from '../src/index.js';
import { closeAll } from './support/h2c.js';
import { type RawAnswer, serveBoth } from './support/rv21c-loopback.js';

// rv21c (adversarial review of the replay content coding): a body recorded with a
// Content-Encoding is decoded for a retry that refuses it, bounded, else 406. Over real
// node:http and h2c servers on loopback.

afterEach(closeAll);

interface Scenario {
  status?: number;
  headers: Record<string, string>;
  body: Buffer;
}

const scenarios = new Map<string, Scenario>();

async function start(options: Parameters<typeof serveBoth>[1] = {}) {
  return serveBoth((req, res) => {
    const scenario = scenarios.get(req.url ?? '');
    if (!scenario) {
      res.statusCode = 404;
      res.end();
      return;
    }
    res.writeHead(scenario.status ?? 201, scenario.headers);
    res.end(scenario.body);
  }, options);
}

const TEXT = 'the report, '.repeat(500);

function problemType(answer: RawAnswer): string | undefined {
  return (JSON.parse(answer.body.toString()) as { type?: string }).type;
}

describe('rv21c @idem/http: decompression bombs', () => {
  it('a gzip bomb (64 MiB of zeros) replays 406 too-large to 8 concurrent identity retries, bounded in CPU and memory', async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024));
    scenarios.set('/bomb', { headers: { 'content-encoding': 'gzip' }, body: bomb });
    const app = await start();
    const first = await app.h1('/bomb', 'bomb-1', ['accept-encoding', 'gzip']);
    expect([first.status, first.headers['content-encoding'], first.body.length]).toEqual([
      201,
      'gzip',
      bomb.length,
    ]);
    let peak = 0;
    const base = process.memoryUsage().arrayBuffers;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - base);
    }, 2);
    const { result, cpuMs } = await timedOnCpu(() =>
      Promise.all(
        Array.from({ length: 8 }, () => app.h1('/bomb', 'bomb-1', ['accept-encoding', 'identity'])),
      ),
    );
    clearInterval(sampler);
    for (const answer of result) {
      expect(answer.status).toBe(406);
      expect(problemType(answer)).toBe(PROBLEM_TYPES.codingNotAcceptable);
      expect(answer.headers.vary).toBe('accept-encoding');
    }
    expect(app.runs()).toBe(1);
    // Each replay decodes at most maxOutcomeBytes (8 MiB): 64 MiB never comes into memory.
    // 8 replays each holding its 8 MiB decoded, and its parts, at most.
    expect(peak).toBeLessThan(8 * 2 * 8 * 1024 * 1024);
    // 8 × 8 MiB of zeros inflated: tens of ms each; never the 64 MiB each.
    expect(cpuMs).toBeLessThan(2_000);
  });

  it('a brotli bomb stops at maxOutcomeBytes: 406 too-large', async () => {
    const bomb = brotliCompressSync(Buffer.alloc(32 * 1024 * 1024));
    scenarios.set('/br-bomb', { headers: { 'content-encoding': 'br' }, body: bomb });
    const app = await start({ maxOutcomeBytes: 1024 * 1024 });
    expect((await app.h1('/br-bomb', 'brb-1', ['accept-encoding', 'br'])).status).toBe(201);
    const retry = await app.h1('/br-bomb', 'brb-1', ['accept-encoding', 'gzip']);
    expect(retry.status).toBe(406);
    expect(JSON.parse(retry.body.toString()).detail).toMatch(/larger than the bound/);
  });

  // FIXED (was FINDING MEDIUM): the number of stacked codings was not bounded: a recorded
  // `Content-Encoding: gzip, gzip, …` of 1,500 layers (a ~35 KB body, a 9 KB header: what a
  // pass-through proxy records from an upstream it does not control) cost seconds of CPU per
  // identity retry (each layer decoded in turn, quadratic in the body's size; the shape of
  // curl's CVE-2022-32206). Fixed: at most 5 codings are decoded (MAX_DECODED_CODINGS);
  // more is 406 coding-not-acceptable at once.
  it('1,500 stacked gzip layers: 406, not seconds of CPU per retry', async () => {
    let body: Buffer = Buffer.from('x');
    for (let i = 0; i < 1_500; i++) body = gzipSync(body, { level: 0 });
    scenarios.set('/stacked-many', {
      headers: { 'content-encoding': Array(1_500).fill('gzip').join(', ') },
      body,
    });
    const app = await start();
    expect((await app.h1('/stacked-many', 'many-1', ['accept-encoding', 'gzip'])).status).toBe(201);
    const { result, cpuMs } = await timedOnCpu(() =>
      app.h1('/stacked-many', 'many-1', ['accept-encoding', 'identity']),
    );
    expect(result.status).toBe(406);
    expect(problemType(result)).toBe(PROBLEM_TYPES.codingNotAcceptable);
    expect(JSON.parse(result.body.toString()).detail).toMatch(/more content codings/);
    expect(cpuMs).toBeLessThan(300);
    // A retry that takes gzip still gets the recorded bytes as they are.
    const gzip = await app.h1('/stacked-many', 'many-1', ['accept-encoding', 'gzip']);
    expect(gzip.body.equals(body)).toBe(true);
    expect(app.runs()).toBe(1);
  });

  it('a slow bomb (8 MB of empty deflate blocks, nothing out) decodes within bounded CPU', async () => {
    const header = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    // Stored blocks of length 0 (BFINAL 0), then a final one, then CRC 0 and size 0.
    const empty = Buffer.from([0x00, 0x00, 0x00, 0xff, 0xff]);
    const body = Buffer.concat([
      header,
      Buffer.concat(Array(1_600_000).fill(empty)),
      Buffer.from([0x01, 0x00, 0x00, 0xff, 0xff]),
      Buffer.alloc(8),
    ]);
    scenarios.set('/slow-bomb', { headers: { 'content-encoding': 'gzip' }, body });
    const app = await start();
    expect((await app.h1('/slow-bomb', 'slow-1', ['accept-encoding', 'gzip'])).status).toBe(201);
    const { result, cpuMs } = await timedOnCpu(() =>
      app.h1('/slow-bomb', 'slow-1', ['accept-encoding', 'identity']),
    );
    expect(result.status).toBe(201);
    expect(result.headers['content-encoding']).toBeUndefined();
    expect(result.body.length).toBe(0);
    // One pass over 8 MB of input: tens of ms; never seconds.
    expect(cpuMs).toBeLessThan(1_500);
  });

  it('a Range on the retry is not applied to the decoded replay: the whole body, no Content-Range', async () => {
    scenarios.set('/range', {
      headers: { 'content-encoding': 'gzip', 'accept-ranges': 'bytes' },
      body: gzipSync(TEXT),
    });
    const app = await start();
    expect((await app.h1('/range', 'rg-1', ['accept-encoding', 'gzip'])).status).toBe(201);
    const ranged = await app.h1('/range', 'rg-1', [
      'accept-encoding',
      'identity',
      'range',
      'bytes=0-9',
    ]);
    expect(ranged.status).toBe(201);
    expect(ranged.headers['content-range']).toBeUndefined();
    expect(ranged.body.toString()).toBe(TEXT);
  });

  it('five stacked layers still decode', async () => {
    let body: Buffer = Buffer.from(TEXT);
    for (let i = 0; i < 5; i++) body = gzipSync(body);
    scenarios.set('/stacked-5', {
      headers: { 'content-encoding': 'gzip, gzip, gzip, gzip, gzip' },
      body,
    });
    const app = await start();
    expect((await app.h1('/stacked-5', 's5-1', ['accept-encoding', 'gzip'])).status).toBe(201);
    const retry = await app.h1('/stacked-5', 's5-1', ['accept-encoding', 'identity']);
    expect([retry.status, retry.body.toString()]).toEqual([201, TEXT]);
  });

  it('a truncated gzip body is 406 corrupt within seconds, never a hang', async () => {
    const gz = gzipSync(TEXT);
    scenarios.set('/truncated', {
      headers: { 'content-encoding': 'gzip' },
      body: gz.subarray(0, gz.length - 12),
    });
    const app = await start();
    expect((await app.h1('/truncated', 'tr-1', ['accept-encoding', 'gzip'])).status).toBe(201);
    const retry = await app.h1('/truncated', 'tr-1', ['accept-encoding', 'identity']);
    expect(retry.status).toBe(406);
    expect(JSON.parse(retry.body.toString()).detail).toMatch(/does not decode/);
  });
});

describe('rv21c @idem/http: stacked codings, case and whitespace', () => {
  it.each([
    ['gzip, gzip', (b: Buffer) => gzipSync(gzipSync(b))],
    ['gzip, br', (b: Buffer) => brotliCompressSync(gzipSync(b))],
    [' GZip ,\tBR ', (b: Buffer) => brotliCompressSync(gzipSync(b))],
    ['x-gzip, identity', (b: Buffer) => gzipSync(b)],
  ] as const)(
    '%j: the whole stack decoded for a retry that takes only part of it',
    async (coding, encode) => {
      const path = `/stack-${coding.length}-${coding.charCodeAt(0)}`;
      scenarios.set(path, {
        headers: { 'content-encoding': coding, 'content-type': 'text/plain', etag: '"e1"' },
        body: encode(Buffer.from(TEXT)),
      });
      const app = await start();
      const key = `key${path.replaceAll('/', '')}`;
      const first = await app.h1(path, key);
      expect(first.status).toBe(201);
      const withBr = /br/i.test(coding);
      for (const refusing of [
        ...(withBr ? ['gzip', 'br'] : ['br']),
        'identity',
        'GZIP;Q=0, br',
        '',
      ]) {
        const answer = await app.h1(path, key, ['accept-encoding', refusing]);
        expect(answer.status).toBe(201);
        expect(answer.headers['content-encoding']).toBeUndefined();
        expect(answer.body.toString()).toBe(TEXT);
        expect(answer.headers['content-length']).toBe(String(Buffer.byteLength(TEXT)));
        expect(answer.headers.etag).toBe('W/"e1"');
        expect(answer.headers.vary).toMatch(/accept-encoding/);
      }
      // Taking the whole stack: as recorded, byte for byte.
      const whole = await app.h1(path, key, ['accept-encoding', 'br, gzip']);
      expect(whole.headers['content-encoding']).toBe(first.headers['content-encoding']);
      expect(whole.body.equals(first.body)).toBe(true);
      expect(app.runs()).toBe(1);
    },
  );
});

describe('rv21c @idem/http: Accept-Encoding edge cases', () => {
  const gz = gzipSync(TEXT);

  it.each([
    ['gzip;q=0.000', 'decoded'],
    ['gzip;q=0.0001', 'decoded'],
    ['gzip;q=0.001', 'as recorded'],
    ['gzip;q=1.000', 'as recorded'],
    ['gzip;q=1.0001', 'decoded'],
    ['gzip;q=-1', 'decoded'],
    ['gzip;q=1e0', 'decoded'],
    ['*;q=0.5, gzip;q=0', 'decoded'],
    ['identity;q=1, *;q=0', 'decoded'],
    [`${'x-a;q=0.5, '.repeat(1_000)}gzip`, 'as recorded'],
    [`${'gzip;q=0.5, '.repeat(1_000)}gzip;q=0`, 'decoded'],
  ] as const)('Accept-Encoding case %# → %s', async (acceptEncoding, expected) => {
    scenarios.set('/ae', { headers: { 'content-encoding': 'gzip' }, body: gz });
    const app = await start();
    expect((await app.h1('/ae', 'ae-1')).status).toBe(201);
    const answer = await app.h1('/ae', 'ae-1', ['accept-encoding', acceptEncoding]);
    expect(answer.status).toBe(201);
    if (expected === 'decoded') {
      expect(answer.headers['content-encoding']).toBeUndefined();
      expect(answer.body.toString()).toBe(TEXT);
    } else {
      expect(answer.headers['content-encoding']).toBe('gzip');
      expect(answer.body.equals(gz)).toBe(true);
    }
  });

  it('two Accept-Encoding fields are one list: identity, gzip takes gzip', async () => {
    scenarios.set('/ae2', { headers: { 'content-encoding': 'gzip' }, body: gz });
    const app = await start();
    expect((await app.h1('/ae2', 'ae2-1')).status).toBe(201);
    const both = await app.h1('/ae2', 'ae2-1', [
      'accept-encoding',
      'identity',
      'accept-encoding',
      'gzip',
    ]);
    expect(both.headers['content-encoding']).toBe('gzip');
    const refused = await app.h1('/ae2', 'ae2-1', [
      'accept-encoding',
      'gzip;q=0',
      'accept-encoding',
      'gzip',
    ]);
    expect(refused.headers['content-encoding']).toBeUndefined();
    expect(refused.body.toString()).toBe(TEXT);
  });
});

describe('rv21c @idem/http: HTTP/2 and event streams', () => {
  it('over HTTP/2 the decoded replay has its own content-length and no content-encoding', async () => {
    const gz = gzipSync(TEXT);
    scenarios.set('/h2', {
      headers: { 'content-encoding': 'gzip', 'content-type': 'text/plain' },
      body: gz,
    });
    const app = await start();
    const first = await app.h2('/h2', 'h2-1', { 'accept-encoding': 'gzip' });
    expect([first.status, first.headers['content-encoding']]).toEqual([201, 'gzip']);
    const retry = await app.h2('/h2', 'h2-1', { 'accept-encoding': 'identity' });
    expect(retry.status).toBe(201);
    expect(retry.headers['content-encoding']).toBeUndefined();
    expect(retry.body.toString()).toBe(TEXT);
    const length = retry.headers['content-length'];
    if (length !== undefined) expect(length).toBe(String(Buffer.byteLength(TEXT)));
    const again = await app.h2('/h2', 'h2-1', { 'accept-encoding': 'gzip;q=0.5' });
    expect(again.body.equals(gz)).toBe(true);
    expect(app.runs()).toBe(1);
  });

  it('a compressed event stream resumes after Last-Event-ID once decoded', async () => {
    const events = 'id: 1\ndata: one\n\nid: 2\ndata: two\n\nid: 3\ndata: three\n\n';
    scenarios.set('/sse', {
      status: 200,
      headers: { 'content-encoding': 'gzip', 'content-type': 'text/event-stream' },
      body: gzipSync(events),
    });
    const app = await start();
    expect((await app.h1('/sse', 'sse-1', ['accept-encoding', 'gzip'])).status).toBe(200);
    const resumed = await app.h1('/sse', 'sse-1', [
      'accept-encoding',
      'identity',
      'last-event-id',
      '2',
    ]);
    expect(resumed.status).toBe(200);
    expect(resumed.headers['content-encoding']).toBeUndefined();
    expect(resumed.body.toString()).toBe('id: 3\ndata: three\n\n');
  });
});
