import { describe, expect, it } from 'vitest';
import { contentTypeParameters } from '../src/content-type.js';
import { bodyFromBytes, bodyFromParsed, MalformedBodyError } from '../src/index.js';

// rev10b: Content-Type parameters are read per RFC 9110 5.6.6, as the app's parsers (busboy,
// undici, content-type) read them; a multipart boundary's transport padding is kept.

const encoder = new TextEncoder();
const canonical = (body: string, contentType: string) => {
  const read = bodyFromBytes(encoder.encode(body), contentType);
  if (read.kind !== 'bytes') throw new Error(`a multipart body read as ${read.kind}`);
  return Buffer.from(read.bytes).toString('hex');
};
const part = (name: string, value: string, boundary: string, padding = '') =>
  `--${boundary}${padding}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`;

describe('contentTypeParameters', () => {
  it('reads tokens and quoted strings (escapes undone), names in any case, in order', () => {
    expect(
      contentTypeParameters(
        'multipart/form-data; note="x;boundary=AAA"; Boundary=BBB;q="a\\"b\\\\c";;',
      ),
    ).toEqual(
      new Map([
        ['note', ['x;boundary=AAA']],
        ['boundary', ['BBB']],
        ['q', ['a"b\\c']],
      ]),
    );
    expect(contentTypeParameters('text/plain')).toEqual(new Map());
    expect(contentTypeParameters('text/plain; a=1; A=2')?.get('a')).toEqual(['1', '2']);
    // An unquoted value beyond a token runs to the next `;` (as undici reads it).
    expect(contentTypeParameters('multipart/form-data; boundary=a:b/c=d e \t;x=1')).toEqual(
      new Map([
        ['boundary', ['a:b/c=d e']],
        ['x', ['1']],
      ]),
    );
  });

  it('refuses a parameter list that does not parse', () => {
    for (const bad of [
      'text/plain; a',
      'text/plain; a=',
      'text/plain; a = 1',
      'text/plain; a="1',
      'text/plain; a="1"x',
      'text/plain; a=1"',
      'text/plain; a=\u0001',
      'text/plain; a="\u0001"',
      'text/plain; =1',
    ]) {
      expect(contentTypeParameters(bad), bad).toBeUndefined();
    }
  });
});

describe('multipart boundary and padding (rev10b)', () => {
  it('splits on the boundary parameter, never on one inside a quoted value', () => {
    const type = 'multipart/form-data; note="x;boundary=AAA"; boundary=BBB';
    const body = (amount: string) =>
      `${part('amount', amount, 'BBB')}${part('pad', `x\r\n${part('amount', '1', 'AAA"')}--AAA"--`, 'BBB')}--BBB--\r\n`;
    expect(canonical(body('1000'), type)).not.toBe(canonical(body('5'), type));
    // The same form under a plain boundary reads alike.
    expect(canonical(body('5'), type)).toBe(
      canonical(body('5').replaceAll('BBB', 'CC'), 'multipart/form-data; boundary="CC"'),
    );
  });

  it('refuses two boundary parameters and a parameter list that does not parse (400)', () => {
    const body = `${part('a', '1', 'B')}--B--\r\n`;
    for (const type of [
      'multipart/form-data; boundary=B; boundary=C',
      'multipart/form-data; boundary=B; BOUNDARY="B"',
      'multipart/form-data; boundary=B; note',
      'multipart/form-data; boundary="B',
    ]) {
      expect(() => bodyFromBytes(encoder.encode(body), type), type).toThrow(MalformedBodyError);
    }
  });

  it('keeps transport padding after a boundary: where it is (and what) tells two bodies apart', () => {
    const type = 'multipart/form-data; boundary=B';
    const a = `${part('amount', '1000', 'B')}${part('amount', '5', 'B', ' ')}--B--\r\n`;
    const b = `${part('amount', '1000', 'B', ' ')}${part('amount', '5', 'B')}--B--\r\n`;
    const c = `${part('amount', '1000', 'B')}${part('amount', '5', 'B', '\t')}--B--\r\n`;
    const plain = `${part('amount', '1000', 'B')}${part('amount', '5', 'B')}--B--\r\n`;
    const prints = new Set([a, b, c, plain].map((body) => canonical(body, type)));
    expect(prints.size).toBe(4);
    // The same padded body under another boundary is the same request.
    expect(canonical(a.replaceAll('--B', '--ZZ'), 'multipart/form-data; boundary=ZZ')).toBe(
      canonical(a, type),
    );
  });
});

describe('charset of a body decoded before the middleware (rev10b)', () => {
  const decoded = (contentType: string) => () => bodyFromParsed('x', contentType, 1_000);
  it('reads the charset parameter, never one inside a quoted value; refuses two', () => {
    expect(decoded('text/plain; charset=utf-8')).not.toThrow();
    expect(decoded('text/plain; note="a;charset=utf-8"; charset=iso-8859-1')).toThrow(/iso-8859-1/);
    expect(decoded('text/plain; note="charset=latin1"')).not.toThrow();
    expect(decoded('text/plain; charset=utf-8; charset=latin1')).toThrow(/more than one charset/);
    expect(decoded('text/plain; charset="utf-8')).toThrow(/do not parse/);
  });
});
