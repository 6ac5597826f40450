import { canonicalJson, fingerprint, type JsonValue } from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AMBIGUOUS, canonicalJsonText } from '../src/canonical-text.js';
import { isAmbiguousJson, isLossy } from '../src/json-ambiguity.js';
import { bodyFromBytes, TextJsonBody } from '../src/request-body.js';
import { fingerprintOf } from '../src/request-fingerprint.js';
import { requestTarget } from '../src/request-target.js';
import { canonicalPath } from '../src/route-path.js';

const RUNS = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 200 : 500);

// A JSON body's canonical JSON is written from its text in the pass that checks it for
// ambiguity (bodyFromBytes): it must be exactly what canonicalJson writes of the parsed value
// (so the fingerprint stays the one records were written with), and ambiguous exactly when
// isAmbiguousJson says so, for any spelling of any JSON value.

/** Choices that spell a value's JSON text in one of its many ways. */
interface Spelling {
  space: () => string;
  /** How to write a number: its own `String`, or another spelling of a close or equal value. */
  number: (n: number) => string;
  string: (s: string) => string;
  /** A repeated member, sometimes. */
  repeat: () => boolean;
}

const SPACES = ['', ' ', '\n', '\t', '\r\n  '];

function spellingFrom(choices: number[]): Spelling {
  let at = 0;
  const next = (): number => {
    const value = choices[at % choices.length] ?? 0;
    at++;
    return value;
  };
  return {
    space: () => SPACES[next() % SPACES.length] as string,
    number: (n) => {
      switch (next() % 9) {
        case 0:
          return `${n}.0`
            .replace('e+', '.0e+')
            .replace(/\.0\.0/, '.0')
            .replace(/e.*\.0$/, '');
        case 1:
          return n.toExponential();
        case 2:
          return Number.isInteger(n) && Math.abs(n) < 1e15 ? `${n}e0` : String(n);
        case 3:
          // Past what a double holds: ambiguous.
          return `${String(n).includes('e') ? '1' : String(n)}0000000000000000000001`;
        case 4:
          return n === 0 ? '-0' : String(n);
        case 5:
          return n === 0 ? '0.000e5' : String(n);
        default:
          return String(n);
      }
    },
    string: (s) => {
      if (next() % 3 !== 0) return JSON.stringify(s);
      // Escapes: the same string spelt another way.
      let out = '"';
      for (const ch of s) {
        const code = ch.codePointAt(0) as number;
        if (code > 0xffff)
          out += ch
            .split('')
            .map((unit) => `\\u${unit.charCodeAt(0).toString(16).padStart(4, '0')}`)
            .join('');
        else if (next() % 2 === 0) out += `\\u${code.toString(16).padStart(4, '0')}`;
        else out += JSON.stringify(ch).slice(1, -1).replace('/', '\\/');
      }
      return `${out}"`;
    },
    repeat: () => next() % 11 === 0,
  };
}

function spell(value: JsonValue, s: Spelling): string {
  if (value === null || typeof value === 'boolean') return String(value);
  if (typeof value === 'number') {
    const text = s.number(value);
    // Only spellings that are JSON.
    try {
      JSON.parse(text);
      return text;
    } catch {
      return String(value);
    }
  }
  if (typeof value === 'string') return s.string(value);
  if (Array.isArray(value))
    return `[${s.space()}${value.map((item) => spell(item, s)).join(`${s.space()},${s.space()}`)}${s.space()}]`;
  const members = Object.entries(value).map(
    ([name, item]) =>
      `${s.space()}${s.string(name)}${s.space()}:${s.space()}${spell(item as JsonValue, s)}`,
  );
  const first = Object.keys(value)[0];
  if (first !== undefined && s.repeat()) members.push(`${s.string(first)}:null`);
  return `${s.space()}{${members.join(',')}}${s.space()}`;
}

const jsonTexts = fc
  .tuple(
    fc.oneof(
      fc.jsonValue({ maxDepth: 6 }),
      fc.array(
        fc.oneof(
          fc.constantFrom(0, 1, -1, 2.5, 1e21, 1e-7, 123456789012345, 2 ** 53),
          fc.double({ noNaN: true, noDefaultInfinity: true }),
          fc.integer(),
        ),
      ),
      fc.dictionary(
        fc.oneof(fc.string(), fc.constantFrom('__proto__', 'a', 'b', 'é', '😀', '10', '9')),
        fc.jsonValue({ maxDepth: 4 }),
      ),
      // Objects with many members, names in any UTF-16.
      fc.dictionary(fc.string({ unit: 'binary', maxLength: 4 }), fc.integer(), {
        minKeys: 17,
        maxKeys: 40,
      }),
    ),
    fc.array(fc.nat(1000), { minLength: 1, maxLength: 40 }),
  )
  .map(([value, choices]) => spell(value as JsonValue, spellingFrom(choices)));

describe('canonicalJsonText', () => {
  it('writes canonicalJson of the parsed text, and is ambiguous exactly when isAmbiguousJson says so', () => {
    fc.assert(
      fc.property(jsonTexts, (text) => {
        const value = JSON.parse(text) as JsonValue;
        const canonical = canonicalJsonText(text);
        if (isAmbiguousJson(text)) expect(canonical).toBe(AMBIGUOUS);
        else expect(canonical).toBe(canonicalJson(value));
      }),
      { numRuns: RUNS },
    );
  });

  it('covers the spellings that matter', () => {
    const cases: [string, string | null][] = [
      ['{"sku":"A-1","qty":2}', '{"qty":2,"sku":"A-1"}'],
      [
        ' { "b" : [1, 2.50, -0, -0.0e3], "a" : {"x": "\\u00e9\\/", "y": null} } ',
        '{"a":{"x":"é/","y":null},"b":[1,2.5,0,0]}',
      ],
      ['{"big": 1e21, "small": 1E-7, "n": -12.5e1}', '{"big":1e+21,"n":-125,"small":1e-7}'],
      ['"\\ud83d\\ude00"', '"😀"'],
      ['{"\\u0061":1,"a":2}', AMBIGUOUS],
      ['{"a":{"b":1},"c":{"b":2,"b":3}}', AMBIGUOUS],
      ['[0.30000000000000001]', AMBIGUOUS],
      ['[9007199254740993]', AMBIGUOUS],
      ['{"__proto__":{"x":1},"10":true,"9":false}', '{"10":true,"9":false,"__proto__":{"x":1}}'],
      ['[]', '[]'],
      ['{}', '{}'],
      ['[[],{}]', '[[],{}]'],
      ['123456789012345', '123456789012345'],
      ['1234567890123456', '1234567890123456'],
    ];
    for (const [text, expected] of cases) {
      expect(canonicalJsonText(text)).toBe(expected);
      if (expected !== AMBIGUOUS) expect(expected).toBe(canonicalJson(JSON.parse(text)));
    }
  });

  it('gives up past its depth (the caller then asks canonicalJson and isAmbiguousJson)', () => {
    const deep = `${'['.repeat(70)}1${']'.repeat(70)}`;
    expect(canonicalJsonText(deep)).toBeUndefined();
    const body = bodyFromBytes(new TextEncoder().encode(deep), 'application/json');
    expect(body.kind).toBe('json');
    expect(body).not.toBeInstanceOf(TextJsonBody);
    expect(canonicalJsonText(`${'['.repeat(60)}1${']'.repeat(60)}`)).toBe(
      `${'['.repeat(60)}1${']'.repeat(60)}`,
    );
  });
});

describe('the fingerprint of a JSON body read from its bytes', () => {
  const href = 'http://api.test/orders?b=2&a=1';
  const url = requestTarget(href);
  const request = (headers: Record<string, string>) => ({
    native: {},
    method: 'POST',
    url: href,
    header: (name: string) => headers[name.toLowerCase()],
    readBody: async () => ({ kind: 'none' as const }),
  });

  it('is the one core writes of the parsed value, with any fingerprint options', async () => {
    await fc.assert(
      fc.asyncProperty(
        jsonTexts,
        fc.boolean(),
        fc.constantFrom(undefined, ['x-version'], ['x-version', 'x-absent']),
        async (text, query, headers) => {
          const bytes = new TextEncoder().encode(text);
          const body = bodyFromBytes(bytes, 'application/json');
          const incoming = request({ 'content-type': 'Application/JSON', 'x-version': '3' });
          const options = { query, headers };
          const print = await fingerprintOf(incoming, 'POST', url, body, options);
          // The old way: the parsed value's canonical JSON written by core.
          const plain =
            body.kind === 'json' ? { kind: 'json' as const, value: body.value, bytes } : body;
          expect(print).toBe(await fingerprintOf(incoming, 'POST', url, plain, options));
          if (body.kind === 'json') {
            const extras: Record<string, JsonValue> = { 'content-type': 'application/json' };
            if (query) extras.query = url.search;
            for (const name of headers ?? [])
              extras[`header:${name}`] = name === 'x-version' ? '3' : null;
            expect(print).toBe(
              fingerprint({ method: 'POST', route: url.pathname, extras, body: body.value }),
            );
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('is taken from the value, not the text, once the value was replaced', async () => {
    const body = bodyFromBytes(new TextEncoder().encode('{"a":1}'), 'application/json');
    expect(body).toBeInstanceOf(TextJsonBody);
    const incoming = request({ 'content-type': 'application/json' });
    const before = await fingerprintOf(incoming, 'POST', url, body, undefined);
    (body as { value: JsonValue }).value = { a: 2 };
    const after = await fingerprintOf(incoming, 'POST', url, body, undefined);
    expect(after).not.toBe(before);
    expect(after).toBe(
      await fingerprintOf(incoming, 'POST', url, { kind: 'json', value: { a: 2 } }, undefined),
    );
  });

  it('leaves exclude to the value', async () => {
    const bytes = new TextEncoder().encode('{"a":1,"t":"now"}');
    const body = bodyFromBytes(bytes, 'application/json');
    const incoming = request({ 'content-type': 'application/json' });
    const options = { exclude: ['t'] };
    expect(await fingerprintOf(incoming, 'POST', url, body, options)).toBe(
      await fingerprintOf(incoming, 'POST', url, { kind: 'json', value: { a: 1 } }, options),
    );
  });
});

describe('the text a TextJsonBody keeps', () => {
  const bytes = new TextEncoder().encode('{"order":7,"sentAt":"12:00:01"}');

  it('is given once, then dropped (the fingerprint is digested from it once)', () => {
    const body = bodyFromBytes(bytes, 'application/json') as TextJsonBody;
    expect(body).toBeInstanceOf(TextJsonBody);
    expect(body.canonical()).toBe('{"order":7,"sentAt":"12:00:01"}');
    expect(body.canonical()).toBeUndefined();
  });

  it('is dropped once the value is read: a change in place is fingerprinted', async () => {
    const incoming = {
      native: {},
      method: 'POST',
      url: '/orders',
      header: () => 'application/json',
      readBody: async () => ({ kind: 'none' as const }),
    };
    const url = requestTarget('/orders');
    const body = bodyFromBytes(bytes, 'application/json');
    if (body.kind !== 'json') throw new Error('not a JSON body');
    delete (body.value as Record<string, JsonValue>).sentAt;
    expect((body as TextJsonBody).canonical()).toBeUndefined();
    expect(await fingerprintOf(incoming, 'POST', url, body, undefined)).toBe(
      await fingerprintOf(incoming, 'POST', url, { kind: 'json', value: { order: 7 } }, undefined),
    );
    // A plain body's members, own and enumerable: a spread copy is the same body.
    expect({ ...body }).toEqual({ kind: 'json', value: { order: 7 }, bytes });
  });
});

// --- bounded time over long tokens -------------------------------------------------------------

/** main's isLossy (its decimal() trimmed zeros with expressions that backtrack): the oracle. */
function isLossyByExpressions(token: string): boolean {
  if (token.length <= 15 && !token.includes('e') && !token.includes('E')) return false;
  const n = Number(token);
  if (!Number.isFinite(n)) return true;
  if (/^-?\d+$/.test(token) && !Number.isSafeInteger(n)) return true;
  const shortest = String(n);
  const decimal = (literal: string): string => {
    const negative = literal.startsWith('-');
    const [mantissa = '', exponent = '0'] = (negative ? literal.slice(1) : literal).split(/[eE]/);
    const [whole = '', fraction = ''] = mantissa.split('.');
    let digits = whole + fraction;
    const leading = digits.length - digits.replace(/^0+/, '').length;
    digits = digits.slice(leading).replace(/0+$/, '');
    if (digits.length === 0) return '0';
    return `${negative ? '-' : ''}${digits}e${whole.length + Number(exponent) - leading}`;
  };
  return shortest !== token && decimal(token) !== decimal(shortest);
}

/** CPU milliseconds of `work` (not wall time: the machine may be loaded). */
function cpuMs(work: () => void): number {
  const start = process.cpuUsage();
  work();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
}

describe('long number literals', () => {
  it("isLossy is main's, for literals with long runs of zeros anywhere", () => {
    const digits = (max: number) =>
      fc
        .array(
          fc.oneof(
            fc.constantFrom('0'.repeat(20), '0'.repeat(400)),
            fc.stringMatching(/^\d{1,20}$/),
          ),
          {
            minLength: 1,
            maxLength: max,
          },
        )
        .map((parts) => parts.join(''));
    const literal = fc
      .tuple(
        fc.boolean(),
        digits(3).map((d) => d.replace(/^0+(?=\d)/, '')),
        fc.option(digits(3), { nil: undefined }),
        fc.option(fc.tuple(fc.constantFrom('e', 'E', 'e+', 'E-', 'e-'), digits(2)), {
          nil: undefined,
        }),
      )
      .map(
        ([negative, whole, fraction, exponent]) =>
          `${negative ? '-' : ''}${whole}${fraction === undefined ? '' : `.${fraction}`}${exponent === undefined ? '' : exponent.join('')}`,
      );
    fc.assert(
      fc.property(literal, (token) => {
        expect(isLossy(token), token).toBe(isLossyByExpressions(token));
      }),
      { numRuns: RUNS },
    );
  });

  // One 1 MiB literal of each shape, with main's answer (worked out by hand: main needs
  // minutes for most of them). Linear, each takes milliseconds; the bound is generous.
  const k = 1 << 20;
  const zeros = '0'.repeat(k);
  const SHAPES: [string, string, JsonValue | typeof AMBIGUOUS][] = [
    ['zeros inside a fraction', `[1.${zeros}1]`, AMBIGUOUS],
    ['zeros ending a fraction', `[1.${zeros}]`, [1]],
    ["zeros after a fraction's point, then a digit", `[-0.${zeros}1]`, AMBIGUOUS],
    ['a negative zero with a long fraction', `[-0.${zeros}]`, [0]],
    ['a long integer', `[1${zeros}]`, AMBIGUOUS],
    ['a long integer cancelled by its exponent', `[1${zeros}e-${k}]`, [1]],
    ['zeros inside an exponent', `[1e${zeros}1]`, [10]],
    ['zeros inside a signed exponent', `[1.5E-${zeros}2]`, [0.015]],
    ['a long exponent', `[1e1${zeros}]`, AMBIGUOUS],
    ['zeros everywhere', `{"a":[0.${zeros}e${zeros}]}`, { a: [0] }],
  ];

  it.each(SHAPES)('%s: fingerprinted in bounded time, as main decided', (_shape, text, value) => {
    const bytes = new TextEncoder().encode(text);
    let body: ReturnType<typeof bodyFromBytes> | undefined;
    let canonical: string | typeof AMBIGUOUS | undefined;
    const used = cpuMs(() => {
      body = bodyFromBytes(bytes, 'application/json');
      canonical = canonicalJsonText(text);
      isAmbiguousJson(text);
    });
    expect(isAmbiguousJson(text)).toBe(value === AMBIGUOUS);
    if (value === AMBIGUOUS) {
      expect(body?.kind).toBe('bytes');
      // The same array (a deep comparison of 1 MiB would take the test's time).
      expect(body?.kind === 'bytes' && body.bytes === bytes).toBe(true);
      expect(canonical).toBe(AMBIGUOUS);
    } else {
      expect(body?.kind).toBe('json');
      expect(canonical).toBe(canonicalJson(value));
      expect(canonical).toBe(canonicalJson(JSON.parse(text)));
    }
    // Quadratic (main), a 1 MiB literal costs minutes; linear, a few milliseconds.
    expect(used).toBeLessThan(2000);
  });

  it('a path of slashes is made canonical in bounded time', () => {
    const path = `${'/'.repeat(k)}x/`;
    let canonical = '';
    const used = cpuMs(() => {
      canonical = canonicalPath(path);
      canonicalPath(`${path}%41/`);
    });
    expect(canonical).toBe(`${'/'.repeat(k)}x`);
    expect(canonicalPath('///')).toBe('/');
    expect(canonicalPath('/A%2F//')).toBe('/a%2f');
    expect(used).toBeLessThan(2000);
  });
});
