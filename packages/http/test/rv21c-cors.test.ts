import { decodeOutcome, encodeOutcome, type IdempotencyStore, type JsonValue } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_RECORDED_HEADERS, PROBLEM_TYPES } from '../src/index.js';
import { closeAll } from './support/h2c.js';
import { type RawAnswer, serveBoth } from './support/rv21c-loopback.js';

// rv21c (adversarial review of the CORS replay): the CORS fields of a response go, on a
// replay, only to a retry from exactly the Origin they were computed for. Real node:http and
// h2c servers on loopback; the app is a CORS layer that runs only for the first request (as
// one mounted after idem does).

afterEach(closeAll);

const ALLOWED = new Set(['https://app.example', 'null']);

type Policy = 'allowlist' | 'reflect-any' | 'star-with-credentials';

function corsApp(policy: Policy) {
  return (req: { headers: Record<string, string | string[] | undefined> }, res: never) => {
    const response = res as unknown as {
      setHeader(name: string, value: string): void;
      writeHead(status: number): void;
      end(body: string): void;
    };
    const raw = req.headers.origin;
    const origin = Array.isArray(raw) ? raw.join(', ') : raw;
    if (policy === 'star-with-credentials') {
      response.setHeader('access-control-allow-origin', '*');
      response.setHeader('access-control-allow-credentials', 'true');
    } else if (origin !== undefined && (policy === 'reflect-any' || ALLOWED.has(origin))) {
      response.setHeader('access-control-allow-origin', origin);
      response.setHeader('access-control-allow-credentials', 'true');
      response.setHeader('access-control-expose-headers', 'x-total');
    }
    response.setHeader('content-type', 'text/plain');
    response.writeHead(201);
    response.end('charged');
  };
}

function grant(answer: RawAnswer) {
  return {
    status: answer.status,
    allowOrigin: answer.headers['access-control-allow-origin'],
    credentials: answer.headers['access-control-allow-credentials'],
    expose: answer.headers['access-control-expose-headers'],
  };
}

function origins(...values: string[]): string[] {
  return values.flatMap((value) => ['origin', value]);
}

describe('rv21c @idem/http: a CORS grant never reaches another Origin', () => {
  it.each([
    ['another case', origins('https://APP.example')],
    ['a trailing slash', origins('https://app.example/')],
    ['a suffix host', origins('https://app.example.evil.example')],
    ['a port', origins('https://app.example:443')],
    ['the null origin', origins('null')],
    ['no Origin', []],
    ['two Origin fields', origins('https://app.example', 'https://evil.example')],
    ['a list in one field', origins('https://app.example, https://evil.example')],
  ])('a grant to https://app.example is not replayed to %s', async (_name, raw) => {
    const app = await serveBoth(corsApp('allowlist') as never);
    const first = await app.h1('/charges', 'c-1', origins('https://app.example'));
    expect(grant(first)).toEqual({
      status: 201,
      allowOrigin: 'https://app.example',
      credentials: 'true',
      expose: 'x-total',
    });
    const other = await app.h1('/charges', 'c-1', raw);
    expect(grant(other)).toEqual({
      status: 201,
      allowOrigin: undefined,
      credentials: undefined,
      expose: undefined,
    });
    expect(other.headers.vary).toMatch(/origin/i);
    expect(other.headers['idempotent-replayed']).toBe('true');
    // The same Origin, with the whitespace HTTP strips around a field value: the grant.
    const same = await app.h1('/charges', 'c-1', origins(' https://app.example\t'));
    expect(grant(same).allowOrigin).toBe('https://app.example');
    expect(app.runs()).toBe(1);
  });

  it('a grant to the null origin goes to a null-origin retry only, never to one without Origin', async () => {
    const app = await serveBoth(corsApp('allowlist') as never);
    expect(grant(await app.h1('/n', 'n-1', origins('null'))).allowOrigin).toBe('null');
    expect(grant(await app.h1('/n', 'n-1')).allowOrigin).toBeUndefined();
    expect(grant(await app.h1('/n', 'n-1', origins('https://app.example'))).allowOrigin).toBe(
      undefined,
    );
    expect(grant(await app.h1('/n', 'n-1', origins('null'))).allowOrigin).toBe('null');
  });

  it('a grant made without Origin (server to server) is not replayed to a browser origin', async () => {
    const app = await serveBoth(corsApp('star-with-credentials') as never);
    expect(grant(await app.h1('/s', 's-1'))).toMatchObject({
      allowOrigin: '*',
      credentials: 'true',
    });
    for (const raw of [origins('https://evil.example'), origins('null')])
      expect(grant(await app.h1('/s', 's-1', raw))).toMatchObject({
        allowOrigin: undefined,
        credentials: undefined,
      });
    // `*` with credentials replays to its own (absent) Origin as it was sent, nothing added.
    expect(grant(await app.h1('/s', 's-1'))).toMatchObject({
      allowOrigin: '*',
      credentials: 'true',
    });
  });

  it('two Origin fields reflected: a retry from either one alone gets nothing', async () => {
    const app = await serveBoth(corsApp('reflect-any') as never);
    const both = origins('https://a.example', 'https://b.example');
    expect(grant(await app.h1('/d', 'd-1', both)).allowOrigin).toBe(
      'https://a.example, https://b.example',
    );
    expect(grant(await app.h1('/d', 'd-1', origins('https://a.example'))).allowOrigin).toBe(
      undefined,
    );
    expect(grant(await app.h1('/d', 'd-1', origins('https://b.example'))).allowOrigin).toBe(
      undefined,
    );
  });

  it('over HTTP/2 too: the same Origin only', async () => {
    const app = await serveBoth(corsApp('allowlist') as never);
    expect(grant(await app.h2('/h2', 'h2-1', { origin: 'https://app.example' })).allowOrigin).toBe(
      'https://app.example',
    );
    const other = await app.h2('/h2', 'h2-1', { origin: 'https://evil.example' });
    expect(grant(other).allowOrigin).toBeUndefined();
    expect(other.headers.vary).toMatch(/origin/);
    expect(grant(await app.h2('/h2', 'h2-1', { origin: 'https://app.example' })).allowOrigin).toBe(
      'https://app.example',
    );
  });

  it('with the CORS fields also in recordedHeaders, another Origin never gets a grant that names it', async () => {
    const app = await serveBoth(corsApp('allowlist') as never, {
      recordedHeaders: [
        ...DEFAULT_RECORDED_HEADERS,
        'access-control-allow-origin',
        'access-control-allow-credentials',
      ],
    });
    await app.h1('/r', 'r-1', origins('https://app.example'));
    const other = await app.h1('/r', 'r-1', origins('https://evil.example'));
    expect(other.status).toBe(201);
    expect(other.headers['access-control-allow-origin']).not.toBe('https://evil.example');
    expect(other.headers['access-control-allow-origin']).not.toBe('*');
  });
});

describe('rv21c @idem/http: the CORS record and the outcome bound', () => {
  it('the recorded Origin counts toward maxOutcomeBytes: a 6 KB reflected Origin is not stored past it', async () => {
    const long = `https://${'a'.repeat(6_000)}.example`;
    const app = await serveBoth(corsApp('reflect-any') as never, { maxOutcomeBytes: 8_192 });
    // The short Origin fits: recorded and replayed.
    await app.h1('/b', 'b-short', origins('https://x.example'));
    expect(
      (await app.h1('/b', 'b-short', origins('https://x.example'))).headers['idempotent-replayed'],
    ).toBe('true');
    // The Origin twice (request Origin and the reflected field) is past the bound: not stored.
    expect(grant(await app.h1('/b', 'b-long', origins(long))).allowOrigin).toBe(long);
    const retry = await app.h1('/b', 'b-long', origins(long));
    expect(retry.status).toBe(500);
    expect(JSON.parse(retry.body.toString()).type).toBe(PROBLEM_TYPES.outcomeNotRecorded);
  });
});

/** A memory store that writes each outcome with its metadata rewritten by `forge`. */
function forgingStore(forge: (meta: Record<string, JsonValue | undefined>) => object) {
  const store: IdempotencyStore = createMemoryStore();
  const complete = store.complete.bind(store);
  store.complete = (input) => {
    const outcome = decodeOutcome(input.outcome);
    const meta = forge({ ...outcome.meta }) as typeof outcome.meta;
    return complete({ ...input, outcome: encodeOutcome({ meta, body: outcome.body }) });
  };
  return store;
}

describe('rv21c @idem/http: a forged CORS record', () => {
  it.each([
    ['an uppercase name', [['Access-Control-Allow-Origin', 'https://evil.example']]],
    ['a Vary field', [['vary', 'cookie']]],
    ['a three-element pair', [['access-control-allow-origin', 'https://app.example', 'x']]],
    ['a NUL in a value', [['access-control-allow-origin', 'https://app.example\u0000']]],
    ['a value past Latin-1', [['access-control-allow-origin', 'https://app.example\u0100']]],
  ])('with %s is an unreadable outcome (500), never sent', async (_name, headers) => {
    const store = forgingStore((meta) => ({
      ...meta,
      cors: { origin: 'https://app.example', headers },
    }));
    const app = await serveBoth(corsApp('allowlist') as never, { store });
    await app.h1('/f', 'f-1', origins('https://app.example'));
    const replay = await app.h1('/f', 'f-1', origins('https://app.example'));
    expect(replay.status).toBe(500);
    expect(JSON.parse(replay.body.toString()).type).toBe(PROBLEM_TYPES.outcomeUnreadable);
    expect(replay.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('a numeric or absent origin in the record is unreadable, never a grant to every retry', async () => {
    for (const origin of [0, undefined, ['https://app.example']]) {
      const store = forgingStore((meta) => ({
        ...meta,
        cors: { origin, headers: [['access-control-allow-origin', '*']] },
      }));
      const app = await serveBoth(corsApp('allowlist') as never, { store });
      await app.h1('/o', 'o-1', origins('https://app.example'));
      const replay = await app.h1('/o', 'o-1');
      expect(replay.status).toBe(500);
      expect(replay.headers['access-control-allow-origin']).toBeUndefined();
    }
  });
});
