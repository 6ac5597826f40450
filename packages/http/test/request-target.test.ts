import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { requestTarget } from '../src/request-target.js';
import { viaTarget, viaUrl } from './support/request-target-oracle.js';

const RUNS = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 100 : 300);

// requestTarget skips the URL parser for the usual spellings: path and query must come out
// exactly as `new URL(url, 'http://localhost')` gives them (they go into the fingerprint and
// the default operation), and a URL the parser refuses must still be refused.

// Characters that matter to the parser: separators, dots, escapes, whitespace, quotes,
// backslashes, non-ASCII, and plain ones.
const piece = fc.constantFrom(
  ...'/?#.%2e%2E..\\ \t\n\'"<>`{}|^@:;=&+$!,~_-*()[]'.split(''),
  '%2e',
  '%2F',
  '..',
  '//',
  'é',
  '\u0000',
  'a',
  'Z',
  '0',
  'orders',
  'x y',
);
const tail = fc.array(piece, { maxLength: 12 }).map((parts) => parts.join(''));
const origin = fc.constantFrom(
  '',
  'http://localhost',
  'http://127.0.0.1:3000',
  'https://api.example.com',
  'http://[::1]:8080',
  'http://exa mple',
  'http://1.2.3.999',
  'http://host:99999',
  'http://user@host',
  'HTTP://localhost',
  'http:/',
  'http:',
);

describe('requestTarget', () => {
  it('gives the path and query new URL gives, and throws where it throws', () => {
    fc.assert(
      fc.property(origin, tail, (start, rest) => {
        const url = `${start}/${rest}`;
        expect(viaTarget(url)).toEqual(viaUrl(url));
        expect(viaTarget(start + rest)).toEqual(viaUrl(start + rest));
      }),
      { numRuns: RUNS },
    );
  });

  it('takes the usual spellings as they are', () => {
    expect(requestTarget('http://localhost/orders')).toEqual({ pathname: '/orders', search: '' });
    expect(requestTarget('/v1/charges/ch_1?x=1&y=%20')).toEqual({
      pathname: '/v1/charges/ch_1',
      search: '?x=1&y=%20',
    });
    expect(requestTarget('http://127.0.0.1:80/a?')).toEqual({ pathname: '/a', search: '' });
    expect(requestTarget('/a/./b/../c')).toEqual({ pathname: '/a/c', search: '' });
    expect(requestTarget('//host/x')).toEqual({ pathname: '/x', search: '' });
    expect(() => requestTarget('http://exa mple/orders')).toThrow();
  });
});
