import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { viaTarget, viaUrl } from './support/request-target-oracle.js';

const RUNS = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 100 : 300);

// Host-side pieces an adapter may copy from a Host header into the URL it builds.
const hostPiece = fc.constantFrom(
  'a',
  'h',
  '0',
  '.',
  ':',
  '@',
  '[',
  ']',
  '%',
  '%2F',
  '%2e',
  '\t',
  '\n',
  '\r',
  ' ',
  '\\',
  '?',
  '#',
  '/',
  '::1',
  '80',
  '99999',
  'é',
  'xn--',
  '\u0000',
  '\u007f',
);
const pathPiece = fc.constantFrom(
  '/',
  '//',
  '.',
  '..',
  '%2e',
  '%2E',
  '%2f',
  '%41',
  '%zz',
  '\\',
  '\t',
  '\n',
  '\r',
  ' ',
  "'",
  '"',
  '`',
  '{',
  '}',
  '^',
  '|',
  '<',
  '>',
  '?',
  '#',
  '&',
  '=',
  ':',
  '@',
  'a',
  'B',
  'é',
  '\ud800',
  '\u007f',
  '\u0000',
);
const scheme = fc.constantFrom('http://', 'https://', '', '/', 'HTTP://', 'http:\\\\', 'ws://');
const host = fc.array(hostPiece, { maxLength: 6 }).map((p) => p.join(''));
const rest = fc.array(pathPiece, { maxLength: 14 }).map((p) => p.join(''));

describe('requestTarget against new URL (review)', () => {
  it('gives what new URL gives for origins built from Host-like input and any path', () => {
    fc.assert(
      fc.property(scheme, host, rest, (s, h, r) => {
        const url = `${s}${h}${r}`;
        expect(viaTarget(url)).toEqual(viaUrl(url));
      }),
      { numRuns: RUNS * 3 },
    );
  });

  it('past the origin memo (many Host values) every answer is still new URL’s', () => {
    for (let i = 0; i < 200; i++) {
      for (const url of [
        `http://h${i}:${1000 + i}/a/b?x=${i}`,
        `http://h${i}:${1000 + i}/a/../b`,
      ]) {
        expect(viaTarget(url)).toEqual(viaUrl(url));
      }
    }
    // An origin the parser refuses, asked again after the memo is full, still throws.
    expect(viaTarget('http://host:99999/a')).toBe('throws');
    expect(viaTarget('http://h1:1001/a')).toEqual({ pathname: '/a', search: '' });
  });
});
