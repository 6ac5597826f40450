import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalPath, targetPath } from '../src/route-path.js';

const RUNS = Number(process.env.IDEM_PROPERTY_RUNS) || (process.env.CI ? 100 : 300);

// canonicalPath and targetPath skip their regular expressions for the usual paths: they must
// give what the expressions give for every path.
function canonicalByExpressions(path: string): string {
  const decoded = path.replace(/%([0-9a-f]{2})/gi, (_escape, hex: string) =>
    hex.toLowerCase() === '2f' ? '%2f' : String.fromCharCode(Number.parseInt(hex, 16)),
  );
  return decoded.toLowerCase().replace(/\/+$/, '') || '/';
}

const pathChars = fc.constantFrom(
  '/',
  'a',
  'B',
  'z',
  '%',
  '2',
  'f',
  'F',
  '4',
  '1',
  '?',
  '#',
  '.',
  'É',
  '-',
);
const paths = fc.array(pathChars, { maxLength: 24 }).map((chars) => chars.join(''));

describe('canonicalPath and targetPath', () => {
  it('canonicalPath gives what its regular expressions give', () => {
    for (const path of ['', '/', '//', '/Orders/', '/orders//', '/a%2Fb/', '/%41%62', 'ABC'])
      expect(canonicalPath(path)).toBe(canonicalByExpressions(path));
    fc.assert(
      fc.property(paths, (path) => {
        expect(canonicalPath(path)).toBe(canonicalByExpressions(path));
      }),
      { numRuns: RUNS },
    );
  });

  it('targetPath of an origin-form target ends at its first ? or #', () => {
    for (const target of ['/', '/orders', '/orders?x=1#y', '/a#b?c', '/?', '/#'])
      expect(targetPath(target)).toBe(target.split(/[?#]/, 1)[0]);
    fc.assert(
      fc.property(paths, (rest) => {
        const target = `/${rest}`;
        expect(targetPath(target)).toBe(target.split(/[?#]/, 1)[0]);
      }),
      { numRuns: RUNS },
    );
  });
});
