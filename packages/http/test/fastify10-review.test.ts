import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { canonicalJson } from '@idem/core';
import { createMemoryStore } from '@idem/store-memory';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AMBIGUOUS, canonicalJsonText } from '../src/canonical-text.js';
import { createIdempotencyHandler } from '../src/index.js';
import { isAmbiguousJson } from '../src/json-ambiguity.js';
import { resumeHints } from '../src/live-answers.js';
import { bodyFromBytes, isJsonContentType, type RequestBody } from '../src/request-body.js';
import { fingerprintOf } from '../src/request-fingerprint.js';
import { requestTarget } from '../src/request-target.js';

// Adversarial review of wt/fastify10: a JSON body's canonical JSON written from its text
// (canonical-text.ts) and digested without core's fingerprint(), begin() without awaits, the
// shared frozen resume hints. The claim under attack: for EVERY body the fingerprint is the
// one main computed, ambiguous bodies are refused (fingerprinted by bytes) exactly as before.

const RUNS = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 150 : 300);

// --- main's bodyFromBytes for a JSON content type, as it was before the branch --------------

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
function mainBody(bytes: Uint8Array, contentType: string): RequestBody {
  if (bytes.length === 0) return { kind: 'none' };
  if (isJsonContentType(contentType)) {
    try {
      const text = strictUtf8.decode(bytes);
      const value = JSON.parse(text);
      if (!isAmbiguousJson(text)) return { kind: 'json', value, bytes };
    } catch {
      // bytes
    }
  }
  return { kind: 'bytes', bytes };
}

const href = 'http://api.test/orders?b=2&a=1';
const url = requestTarget(href);
function incoming(contentType: string) {
  return {
    native: {},
    method: 'POST',
    url: href,
    header: (name: string) => (name.toLowerCase() === 'content-type' ? contentType : undefined),
    readBody: async () => ({ kind: 'none' as const }),
  };
}

async function both(bytes: Uint8Array, contentType = 'application/json', options?: object) {
  const now = bodyFromBytes(bytes, contentType);
  const before = mainBody(bytes, contentType);
  const req = incoming(contentType);
  return {
    now,
    before,
    printNow: await fingerprintOf(req, 'POST', url, now, options),
    printBefore: await fingerprintOf(req, 'POST', url, before, options),
  };
}

const enc = (text: string) => new TextEncoder().encode(text);

async function expectSameAsMain(text: string | Uint8Array, contentType?: string, options?: object) {
  const bytes = typeof text === 'string' ? enc(text) : text;
  const r = await both(bytes, contentType, options);
  expect(r.now.kind, String(text).slice(0, 80)).toBe(r.before.kind);
  expect(r.printNow, String(text).slice(0, 80)).toBe(r.printBefore);
}

// --- 1. hostile JSON, one by one -------------------------------------------------------------

const NUMBERS = [
  '0',
  '-0',
  '0.0',
  '-0.0',
  '0e5',
  '-0E-5',
  '1e21',
  '1E21',
  '1e+21',
  '1e400',
  '1E400',
  '-1e400',
  '5e-324',
  '4.9e-324',
  '2e-324',
  '1e-400',
  '2.50',
  '2.5',
  '0.30000000000000004',
  '0.30000000000000001',
  '0.3',
  '123456789012345',
  '-12345678901234',
  '-123456789012345',
  '1234567890123456',
  '9007199254740991',
  '9007199254740992',
  '9007199254740993',
  '-9007199254740993',
  '12345678901234567890',
  '100000000000000000000000',
  '1.7976931348623157e308',
  '1.7976931348623159e308',
  '2.2250738585072014e-308',
  '1e-7',
  '0.0000001',
  '1.0e0',
  '10e-1',
  '1.5e+0',
  '0.1e1',
  '100e-2',
];

const STRINGS = [
  '"a"',
  '"\\u0061"',
  '"\\u0000"',
  '"\\ud800"',
  '"\\uD800"',
  '"\\udc00\\ud800"',
  '"\\ud83d\\ude00"',
  '"\u{1F600}"',
  '"\\/"',
  '"/"',
  '"\\""',
  '"\\\\"',
  '"\\b\\f\\n\\r\\t"',
  '"\\u001f"',
  '"\u007f"',
  '"\u2028\u2029"',
  '"\\u2028"',
  '"\u00a0"',
  '"\ufeff"',
  '"\\ufeff"',
  '"\uffff"',
  '""',
  '"__proto__"',
  '"é"',
  '"e\u0301"',
];

const NAMES = [
  'a',
  '\\u0061',
  'b',
  '__proto__',
  '\\u005f_proto__',
  'constructor',
  'toJSON',
  'hasOwnProperty',
  '',
  '0',
  '1',
  '10',
  '2',
  '\\ud800',
  '\\udc00',
  '\u{1F600}',
  '\\ud83d\\ude00',
  '\uffff',
  'é',
  'e\u0301',
  'A',
  '\\/',
  '/',
];

describe('the text path against main, hostile bodies one by one', () => {
  it('numbers alone, in arrays and as members: same kind and fingerprint as main', async () => {
    for (const n of NUMBERS) {
      await expectSameAsMain(n);
      await expectSameAsMain(`[${n}, ${n}]`);
      await expectSameAsMain(`{"n": ${n}}`);
      await expectSameAsMain(`{"n": [${n}], "m": {"x": ${n}}}`);
    }
    // Two spellings of one double: one fingerprint (as on main).
    const a = await both(enc('{"n":2.50}'));
    const b = await both(enc('{"n":2.5e0}'));
    expect(a.printNow).toBe(b.printNow);
  });

  it('strings and escapes: same kind and fingerprint as main', async () => {
    for (const s of STRINGS) {
      await expectSameAsMain(s);
      await expectSameAsMain(`[${s}]`);
      await expectSameAsMain(`{"s":${s}}`);
      await expectSameAsMain(`{${s}:1}`);
    }
  });

  it('member names (duplicates after decoding, __proto__, constructor, sort order)', async () => {
    for (const a of NAMES) {
      for (const b of NAMES) {
        await expectSameAsMain(`{"${a}":1,"${b}":2}`);
        await expectSameAsMain(`{"${a}":{"${b}":[1,{"${a}":true}]}, "z": null}`);
      }
    }
    await expectSameAsMain('{"__proto__":{"polluted":1},"a":1}');
    await expectSameAsMain('{"__proto__":1,"__proto__":2}');
    await expectSameAsMain('{"a":1,"b":2,"a":1}');
    await expectSameAsMain('[{"a":1},{"a":1}]');
    await expectSameAsMain('{"x":{"a":1},"y":{"a":1}}');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('whitespace, JSON and not JSON, and the BOM', async () => {
    for (const ws of [' ', '\t', '\n', '\r', '\u00a0', '\ufeff', '\u2028', '\u000b', '\u000c']) {
      await expectSameAsMain(
        `${ws}{${ws}"a"${ws}:${ws}1${ws},${ws}"b"${ws}:${ws}[${ws}]${ws}}${ws}`,
      );
      await expectSameAsMain(`${ws}[${ws}1${ws},${ws}2${ws}]`);
    }
    // A UTF-8 BOM before the text: TextDecoder drops it, as main's did.
    await expectSameAsMain(new Uint8Array([0xef, 0xbb, 0xbf, ...enc('{"a":1}')]));
  });

  it('bodies that are not objects, and invalid JSON / UTF-8', async () => {
    for (const text of [
      'null',
      'true',
      'false',
      '"x"',
      '1',
      '[]',
      '{}',
      '[[]]',
      '[{}]',
      '01',
      '-',
      '1.',
      '.5',
      '+1',
      '{"a":1,}',
      '[1,]',
      "{'a':1}",
      'NaN',
      'Infinity',
      '{"a":1}x',
      '{"a":1}{"a":1}',
      '"\u0001"',
      '{"a" 1}',
      '"\\x41"',
      '"unterminated',
      'nul',
      'tru',
    ])
      await expectSameAsMain(text);
    // Invalid UTF-8: a lone continuation byte, an overlong, a CESU-8 surrogate, a cut sequence.
    for (const bad of [[0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82]]) {
      await expectSameAsMain(new Uint8Array([...enc('{"a":"'), ...bad, ...enc('"}')]));
    }
  });

  it('content types and exclude give what main gave', async () => {
    const text = '{"b":1,"a":{"t":2,"u":3},"__proto__":{"t":4}}';
    for (const ct of [
      'application/json',
      'APPLICATION/JSON; charset=utf-8',
      'application/merge-patch+json',
      'application/vnd.api+json;v=1',
      'text/json',
      'text/plain',
      'application/jsonx',
      '',
    ]) {
      await expectSameAsMain(text, ct);
      for (const exclude of [['a'], ['a.t'], ['__proto__'], ['__proto__.t'], ['missing'], []])
        await expectSameAsMain(text, ct, { exclude });
    }
  });

  it('nesting at and around the hand-off at 64 levels, and past core depth (256)', async () => {
    for (const depth of [1, 62, 63, 64, 65, 66, 127, 255, 256, 257, 300, 5000]) {
      await expectSameAsMain(`${'['.repeat(depth)}1${']'.repeat(depth)}`);
      await expectSameAsMain(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`);
      // Ambiguity deep down, past where the text pass gives up.
      await expectSameAsMain(`${'[{"a":1,"a":'.repeat(depth)}1${'}]'.repeat(depth)}`);
      await expectSameAsMain(`[1e400,${'['.repeat(depth)}1${']'.repeat(depth)}]`);
      await expectSameAsMain(`[${'['.repeat(depth)}1${']'.repeat(depth)},1e400]`);
      await expectSameAsMain(`{"b":1,"a":${'['.repeat(depth)}0.1${']'.repeat(depth)},"a":2}`);
    }
  });
});

// --- 2. random hostile JSON texts against main ---------------------------------------------

const space = fc.constantFrom('', ' ', '\n', '\t', '\r\n ');
const numberText = fc.oneof(
  fc.constantFrom(...NUMBERS),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map(String),
  fc.integer().map(String),
  fc.bigInt({ min: -(10n ** 25n), max: 10n ** 25n }).map(String),
  fc
    .tuple(fc.integer({ min: -999, max: 999 }), fc.nat(999), fc.integer({ min: -400, max: 400 }))
    .map(([w, f, e]) => `${w}.${f}e${e}`),
);
const nameText = fc.oneof(
  fc.constantFrom(...NAMES).map((n) => `"${n}"`),
  fc.string({ maxLength: 4 }).map((s) => JSON.stringify(s)),
);
const stringText = fc.oneof(
  fc.constantFrom(...STRINGS),
  fc.string({ maxLength: 6, unit: 'binary' }).map((s) => JSON.stringify(s)),
  fc.string({ maxLength: 6, unit: 'grapheme' }).map((s) => JSON.stringify(s)),
);
const { json: jsonText } = fc.letrec<{ json: string }>((tie) => ({
  json: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    numberText,
    stringText,
    fc.constantFrom('true', 'false', 'null'),
    fc
      .tuple(fc.array(fc.tuple(space, tie('json'), space), { maxLength: 4 }))
      .map(([items]) => `[${items.map((t) => t.join('')).join(',')}]`),
    fc
      .array(fc.tuple(space, nameText, space, tie('json'), space), { maxLength: 4 })
      .map((members) => `{${members.map(([a, n, b, v, c]) => `${a}${n}${b}:${v}${c}`).join(',')}}`),
  ),
}));
// Around the hand-off: a random body wrapped 60..68 levels deep.
const deepText = fc
  .tuple(jsonText, fc.integer({ min: 58, max: 68 }), fc.boolean())
  .map(([t, d, obj]) =>
    obj ? `${'{"k":'.repeat(d)}${t}${'}'.repeat(d)}` : `${'['.repeat(d)}${t}${']'.repeat(d)}`,
  );

describe('the text path against main, random hostile texts', () => {
  it('canonicalJsonText is canonicalJson(JSON.parse) or AMBIGUOUS exactly when main says so', () => {
    fc.assert(
      fc.property(fc.oneof(jsonText, deepText), (text) => {
        const canonical = canonicalJsonText(text);
        if (canonical === undefined) return; // gave up: main's path is taken
        expect(canonical === AMBIGUOUS).toBe(isAmbiguousJson(text));
        if (canonical !== AMBIGUOUS) expect(canonical).toBe(canonicalJson(JSON.parse(text)));
      }),
      { numRuns: RUNS },
    );
  });

  it('bodyFromBytes + fingerprintOf give main kind and fingerprint', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(jsonText, deepText),
        fc.constantFrom(undefined, { exclude: ['a'] }, { headers: ['x-v'] }, { query: false }),
        async (text, options) => {
          await expectSameAsMain(text, 'application/json', options);
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('different bodies never share a fingerprint unless main gave them one', async () => {
    await fc.assert(
      fc.asyncProperty(jsonText, jsonText, async (x, y) => {
        const a = await both(enc(x));
        const b = await both(enc(y));
        expect(a.printNow === b.printNow).toBe(a.printBefore === b.printBefore);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('a custom adapter that changes the value bodyFromBytes gave', () => {
  // FINDING LOW (fixed: reading `value` drops the text, see TextJsonBody): bodyFromBytes is public (the README names it for custom adapters' readBody).
  // TextJsonBody.canonical() notices a *replaced* value (identity check) but not one changed in
  // place: an adapter that drops a volatile member (`delete body.value.sentAt`) or adds one
  // before returning it had its change fingerprinted on main; on the branch the text's
  // canonical JSON wins, so retries that differ only in the dropped member now get 422 instead
  // of their replay (and an added member is ignored). Fix: freeze the parsed value handed out
  // (or document that the value must not be changed), or keep the canonical text private to
  // the adapters of this repository (return a plain body from the public bodyFromBytes).
  it('FIXED (was FINDING LOW): a value changed in place is fingerprinted as changed, as on main', async () => {
    const bytes = enc('{"order":7,"sentAt":"12:00:01"}');
    const now = bodyFromBytes(bytes, 'application/json');
    const before = mainBody(bytes, 'application/json');
    for (const body of [now, before])
      if (body.kind === 'json') delete (body.value as Record<string, unknown>).sentAt;
    const req = incoming('application/json');
    expect(await fingerprintOf(req, 'POST', url, now, undefined)).toBe(
      await fingerprintOf(req, 'POST', url, before, undefined),
    );
  });
});

// --- 3. bounded time: a long number literal ----------------------------------------------------

/** CPU milliseconds of `bodyFromBytes` over `text`, least of `rounds` (alternating callers). */
function cpuOf(texts: string[], rounds: number): number[] {
  const best = texts.map(() => Number.POSITIVE_INFINITY);
  const bytes = texts.map(enc);
  for (let r = 0; r < rounds; r++) {
    bytes.forEach((b, i) => {
      const start = process.cpuUsage();
      bodyFromBytes(b, 'application/json');
      const used = process.cpuUsage(start);
      best[i] = Math.min(best[i] as number, (used.user + used.system) / 1000);
    });
  }
  return best;
}

describe('bounded time over long tokens', () => {
  // FINDING HIGH (fixed: decimal() trims zeros with loops; canonical-text.test.ts holds 1 MiB
  // literals of each shape to a bound) (also on main: not a regression of this branch, but the branch calls the same
  // isLossy from its new text pass): isLossy() -> decimal() trims trailing zeros with
  // digits.replace(/0+$/, ''), which backtracks quadratically over a long run of zeros that is
  // not at the end. One JSON body `[1.000…0001]` of 100 KB costs ~5 s of CPU, 300 KB ~45 s,
  // and the default maxBodyBytes (1 MiB) allows ~8 min of a blocked event loop per request:
  // a single unauthenticated request (the body is read before the handler) stalls the server.
  // Fix: trim the zeros with a loop from the end (or a regex that cannot backtrack, e.g.
  // strip with lastIndexOf of a non-zero digit), or refuse a number literal longer than, say,
  // 400 characters as ambiguous before any regex runs.
  it('FIXED (was FINDING HIGH): a 32k-digit number literal costs no more than a 32k-char string (linear)', () => {
    const k = 32_000;
    const [number, string] = cpuOf([`[1.${'0'.repeat(k)}1]`, `["${'0'.repeat(k + 2)}"]`], 2);
    // Linear: both a fraction of a millisecond to a few ms. Quadratic: ~0.5 s against ~0.1 ms.
    expect(number as number).toBeLessThan(Math.max(20, (string as number) * 100));
  });

  it('escaped strings, escaped names and wide objects stay linear', () => {
    const k = 40_000;
    const texts = [
      `["${'\\u0061'.repeat(k)}"]`,
      `["${'a'.repeat(6 * k)}"]`,
      `{${Array.from({ length: k / 8 }, (_, i) => `"\\u0062${i}":[${i}]`).join(',')}}`,
      `[${Array.from({ length: k / 4 }, (_, i) => `{"b${i}":1}`).join(',')}]`,
      `${'['.repeat(63)}${'1,'.repeat(k)}1${']'.repeat(63)}`,
      `${'['.repeat(65)}${'1,'.repeat(k)}1${']'.repeat(65)}`,
    ];
    const cpu = cpuOf(texts, 3);
    // The slowest linear shape against the plain string of about the same size: within 200x.
    const base = Math.max(cpu[1] as number, 1);
    for (const [i, used] of cpu.entries()) expect(used, `shape ${i}`).toBeLessThan(base * 200);
  });
});

// --- 4. begin(): hooks that answer with values, promises, thenables, throws -------------------

function post(key: string, body: string, headers: Record<string, string> = {}) {
  return new Request('http://api.test/orders', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, ...headers },
    body,
  });
}

function counter() {
  let runs = 0;
  return {
    runs: () => runs,
    next: async (request: Request) => {
      runs++;
      const text = await request.text();
      return Response.json({ run: runs, text }, { status: 201 });
    },
  };
}

type Hook = (req: unknown) => unknown;
const answers: [string, (v: unknown) => Hook][] = [
  ['a value', (v) => () => v],
  ['a promise', (v) => async () => v],
  // biome-ignore lint/suspicious/noThenProperty: a hook may answer with a thenable, which is the case under test
  ['a thenable', (v) => () => ({ then: (ok: (x: unknown) => void) => ok(v) })],
  ['a late promise', (v) => () => new Promise((ok) => setTimeout(() => ok(v), 5))],
];

describe('begin() with scope and extras hooks of every shape', () => {
  for (const [shape, make] of answers) {
    it(`scope hook answering with ${shape}: tenants isolated, replay and 422 as before`, async () => {
      const app = counter();
      const handler = createIdempotencyHandler({
        store: createMemoryStore(),
        onWarning: () => {},
        scope: ((req: Request) =>
          make({ principal: req.headers.get('x-tenant') ?? undefined })(req)) as never,
        fingerprint: { extras: make({ v: 1 }) as never },
      });
      const a = await handler.handle(post('k', '{"a":1}', { 'x-tenant': 'alice' }), app.next);
      expect(a.status).toBe(201);
      const b = await handler.handle(post('k', '{"a":1}', { 'x-tenant': 'bob' }), app.next);
      expect(await b.json()).toMatchObject({ run: 2 });
      const again = await handler.handle(
        post('k', ' { "a" : 1.0 } ', { 'x-tenant': 'alice' }),
        app.next,
      );
      expect(again.status).toBe(201);
      expect(await again.json()).toMatchObject({ run: 1, text: '{"a":1}' });
      const other = await handler.handle(post('k', '{"a":2}', { 'x-tenant': 'alice' }), app.next);
      expect(other.status).toBe(422);
      const none = await handler.handle(post('k', '{"a":1}'), app.next);
      expect(none.status).toBe(500);
      expect(app.runs()).toBe(2);
    });
  }

  for (const [where, hook] of [
    [
      'throws',
      () => () => {
        throw new Error('hook broke');
      },
    ],
    [
      'rejects',
      () => async () => {
        throw new Error('hook broke');
      },
    ],
  ] as const) {
    it(`a scope hook that ${where}: nothing runs, nothing is stored, the next request is fine`, async () => {
      const app = counter();
      let broken = true;
      const handler = createIdempotencyHandler({
        store: createMemoryStore(),
        onWarning: () => {},
        scope: (() => (broken ? hook()() : { principal: 'p' })) as never,
      });
      await expect(
        Promise.resolve().then(() => handler.handle(post('k', '{"a":1}'), app.next)),
      ).rejects.toThrow('hook broke');
      broken = false;
      const ok = await handler.handle(post('k', '{"a":2}'), app.next);
      expect(await ok.json()).toMatchObject({ run: 1, text: '{"a":2}' });
    });

    it(`an extras hook that ${where}: nothing runs, the key stays free`, async () => {
      const app = counter();
      let broken = true;
      const handler = createIdempotencyHandler({
        store: createMemoryStore(),
        scope: 'global',
        fingerprint: { extras: (() => (broken ? hook()() : { v: 1 })) as never },
      });
      await expect(
        Promise.resolve().then(() => handler.handle(post('k', '{"a":1}'), app.next)),
      ).rejects.toThrow('hook broke');
      broken = false;
      const ok = await handler.handle(post('k', '{"a":2}'), app.next);
      expect(await ok.json()).toMatchObject({ run: 1, text: '{"a":2}' });
    });
  }

  it('an extras hook that changes the parsed body it can reach does not change the fingerprint', async () => {
    // The hook gets the native request only; a body read from bytes is idem's own parse.
    const app = counter();
    const handler = createIdempotencyHandler({
      store: createMemoryStore(),
      scope: 'global',
      fingerprint: { extras: async () => ({ v: 1 }) },
    });
    await handler.handle(post('k', '{"a":1,"b":2}'), app.next);
    expect((await handler.handle(post('k', '{"b":2,"a":1}'), app.next)).status).toBe(201);
    expect((await handler.handle(post('k', '{"b":2,"a":3}'), app.next)).status).toBe(422);
    expect(app.runs()).toBe(1);
  });

  it('the shared no-hints object cannot be changed by anyone, and requests with hints get their own', () => {
    const none = resumeHints(() => undefined);
    expect(Object.isFrozen(none)).toBe(true);
    expect(() => {
      (none as { attach: boolean }).attach = false;
    }).toThrow(TypeError);
    expect(resumeHints(() => undefined)).toEqual({
      lastEventId: undefined,
      generation: undefined,
      attach: true,
    });
    const some = resumeHints((n) => (n.toLowerCase() === 'last-event-id' ? '7' : undefined));
    expect(some).not.toBe(none);
    expect(some.lastEventId).toBe('7');
    expect(resumeHints(() => '')).toMatchObject({
      lastEventId: undefined,
      generation: '',
      attach: true,
    });
  });
});

// --- 5. end to end over loopback: the real adapters --------------------------------------------

// The adapters are other packages of the workspace: loaded from their own folders (built), with
// the frameworks their package depends on.
const here = (path: string) => new URL(path, import.meta.url);
const requireFrom = (pkg: string) => createRequire(here(`../../${pkg}/package.json`));

interface Served {
  url: string;
  runs: () => number;
  close: () => Promise<void>;
}

async function listenNode(server: import('node:http').Server): Promise<string> {
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
const closeNode = (server: import('node:http').Server) =>
  new Promise<void>((ok) => {
    server.closeAllConnections?.();
    server.close(() => ok());
  });

const ADAPTERS: Record<string, () => Promise<Served>> = {
  async fastify() {
    const Fastify = requireFrom('fastify')('fastify');
    const { idempotency } = await import(here('../../fastify/dist/index.js').href);
    let runs = 0;
    const app = Fastify();
    await app.register(idempotency, {
      store: createMemoryStore(),
      scope: 'global',
      onWarning: () => {},
    });
    app.post(
      '/orders',
      async (request: { body: unknown }, reply: { code: (n: number) => unknown }) => {
        runs++;
        reply.code(201);
        return { run: runs, body: request.body };
      },
    );
    const url = await app.listen({ port: 0, host: '127.0.0.1' });
    return { url, runs: () => runs, close: () => app.close() };
  },
  async express() {
    const express = requireFrom('express')('express');
    const { idempotency } = await import(here('../../express/dist/index.js').href);
    let runs = 0;
    const app = express();
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.use(express.json());
    app.post(
      '/orders',
      (req: { body: unknown }, res: { status: (n: number) => { json: (v: unknown) => void } }) => {
        runs++;
        res.status(201).json({ run: runs, body: req.body });
      },
    );
    const server = (await import('node:http')).createServer(app);
    return { url: await listenNode(server), runs: () => runs, close: () => closeNode(server) };
  },
  async koa() {
    const Koa = requireFrom('koa')('koa');
    const { idempotency } = await import(here('../../koa/dist/index.js').href);
    let runs = 0;
    const app = new Koa();
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.use(async (ctx: { req: AsyncIterable<Buffer>; status: number; body: unknown }) => {
      runs++;
      const parts: Buffer[] = [];
      for await (const part of ctx.req) parts.push(part);
      ctx.status = 201;
      ctx.body = { run: runs, body: JSON.parse(Buffer.concat(parts).toString() || 'null') };
    });
    const server = (await import('node:http')).createServer(app.callback());
    return { url: await listenNode(server), runs: () => runs, close: () => closeNode(server) };
  },
  async hono() {
    const req = requireFrom('hono');
    const honoDir = req.resolve('hono').replace(/[/\\]cjs[/\\]index\.js$/, '');
    const { Hono } = await import(new URL(`file://${honoDir}/index.js`).href);
    const { serve } = req('@hono/node-server');
    const { idempotency } = await import(here('../../hono/dist/index.js').href);
    let runs = 0;
    const app = new Hono();
    app.use(idempotency({ store: createMemoryStore(), scope: 'global', onWarning: () => {} }));
    app.post(
      '/orders',
      async (c: {
        req: { json: () => Promise<unknown> };
        json: (v: unknown, s: number) => Response;
      }) => {
        runs++;
        return c.json({ run: runs, body: await c.req.json() }, 201);
      },
    );
    let server: import('node:http').Server | undefined;
    const port = await new Promise<number>((ok) => {
      server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) =>
        ok(info.port),
      );
    });
    return {
      url: `http://127.0.0.1:${port}`,
      runs: () => runs,
      close: () => closeNode(server as import('node:http').Server),
    };
  },
};

const deep = (d: number, inner: string) => `${'{"k":'.repeat(d)}${inner}${'}'.repeat(d)}`;

describe.each(Object.keys(ADAPTERS))('end to end over loopback: %s', (name) => {
  let served: Served;
  beforeAll(async () => {
    served = await (ADAPTERS[name] as () => Promise<Served>)();
  });
  afterAll(() => served?.close());

  const send = async (key: string, body: string, contentType = 'application/json') => {
    const response = await fetch(`${served.url}/orders`, {
      method: 'POST',
      headers: { 'content-type': contentType, 'idempotency-key': `${name}-${key}` },
      body,
    });
    return {
      status: response.status,
      replayed: response.headers.get('idempotent-replayed'),
      text: await response.text(),
    };
  };

  it('another spelling of one body replays; another body under the key is a 422', async () => {
    const runs = served.runs();
    // Fastify answers a body with a __proto__ member 400 itself (onProtoPoisoning: 'error').
    const p = name === 'fastify' ? 'p' : '__proto__';
    const first = await send('a', `{"a":1,"b":[1,2.5,"\\u00e9"],"${p}":{"x":0}}`);
    expect(first.status).toBe(201);
    const respelt = await send(
      'a',
      ` { "${p}" : { "x" : -0 }, "b" : [ 1e0, 25e-1, "é" ], "a" : 1.0 } `,
    );
    expect(respelt.status).toBe(201);
    expect(respelt.text).toBe(first.text);
    for (const other of [
      `{"a":1,"b":[1,2.5,"\\u00e9"],"${p}":{"x":1}}`,
      `{"a":1,"b":[1,2.5,"e\u0301"],"${p}":{"x":0}}`,
      '{"a":1,"b":[1,2.5,"\\u00e9"]}',
      `{"a":1,"b":[2.5,1,"\\u00e9"],"${p}":{"x":0}}`,
    ]) {
      expect((await send('a', other)).status, other).toBe(422);
    }
    expect(served.runs() - runs).toBe(1);
  });

  it('ambiguous bodies are their bytes: a repeated member and a lossy number', async () => {
    const runs = served.runs();
    expect((await send('dup', '{"a":1,"a":2}')).status).toBe(201);
    expect((await send('dup', '{"a":2}')).status).toBe(422);
    expect((await send('dup', '{"a":1, "a":2}')).status).toBe(422);
    const same = await send('dup', '{"a":1,"a":2}');
    expect(same.status).toBe(201);
    expect(await send('lossy', '{"n":0.30000000000000001}')).toMatchObject({ status: 201 });
    expect((await send('lossy', '{"n":0.3}')).status).toBe(422);
    expect(served.runs() - runs).toBe(2);
  });

  it('concurrent requests under one key, two bodies in many spellings: one run, no cross replay', async () => {
    const runs = served.runs();
    const a = ['{"a":1,"b":2}', ' {"b":2.0,"a":1} ', '{"b":2e0,"a":1.00}', '{"a":1,"b":20e-1}'];
    const b = ['{"a":1,"b":3}', '{"b":3,"a":1}', '{"b":3.0,"a":1}', '{"a":1e0,"b":3}'];
    const order = [a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]] as string[];
    const results = await Promise.all(order.map((body) => send('race', body)));
    expect(served.runs() - runs).toBe(1);
    const ran = results.filter((r) => r.status === 201);
    expect(ran.length).toBeGreaterThanOrEqual(1);
    const winner = JSON.parse((ran[0] as { text: string }).text).body;
    const winners = winner.b === 2 ? a : b;
    results.forEach((r, i) => {
      const mine = winners.includes(order[i] as string);
      // The winner's spellings: its outcome or 409 (in progress); the other body's: 422 or 409.
      expect(mine ? [201, 409] : [422, 409], `${order[i]} -> ${r.status}`).toContain(r.status);
      if (r.status === 201) expect(r.text).toBe((ran[0] as { text: string }).text);
    });
  });

  it('bodies nested around the 64-level hand-off replay when respelt and 422 when changed', async () => {
    const runs = served.runs();
    for (const d of [63, 64, 65]) {
      expect((await send(`deep${d}`, deep(d, '{"b":1,"a":2}'))).status).toBe(201);
      expect((await send(`deep${d}`, deep(d, '{ "a" : 2.0 , "b" : 1 }'))).status).toBe(201);
      expect((await send(`deep${d}`, deep(d, '{"a":2,"b":2}'))).status).toBe(422);
    }
    expect(served.runs() - runs).toBe(3);
  });
});
