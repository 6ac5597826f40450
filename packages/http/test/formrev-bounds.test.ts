import { describe, expect, it } from 'vitest';
import { BodyAlreadyReadError, BodyTooLargeError, bodyFromParsed } from '../src/index.js';

// formrev: cc288e5's checkForm runs on the parsed form's JSON text (jsonTextOf, iterative past
// JSON.stringify's depth). Time and memory stay bounded for huge parsed forms: wide, deep,
// with a '%' at the bottom, and past the limit. Real parsers cap forms well below these
// (qs depth 32 on Express, 5 under co-body; parameterLimit 1000).

const FORM = 'application/x-www-form-urlencoded';
const LIMIT = 1_048_576;

const timed = <T>(run: () => T): [T | unknown, number] => {
  const started = performance.now();
  try {
    return [run(), performance.now() - started];
  } catch (error) {
    return [error, performance.now() - started];
  }
};

describe('formrev: bodyFromParsed on huge parsed forms stays bounded', () => {
  it('wide: 50k pairs (~0.9 MB of JSON text) fingerprinted as JSON; with a % in the last value refused', () => {
    const wide: Record<string, string> = {};
    for (let i = 0; i < 50_000; i++) wide[`k${i}`] = `v${i}`;
    const [body, ms] = timed(() => bodyFromParsed(wide, FORM, LIMIT));
    expect((body as { kind: string }).kind).toBe('json');
    wide.k49999 = '50%';
    const [refused, ms2] = timed(() => bodyFromParsed(wide, FORM, LIMIT));
    expect(refused).toBeInstanceOf(BodyAlreadyReadError);
    expect(ms + ms2).toBeLessThan(10_000);
  });

  it('deep: 50k levels (past JSON.stringify) with a % at the bottom refused; 200k levels 413', () => {
    let deep: unknown = '50%';
    for (let i = 0; i < 50_000; i++) deep = { a: deep };
    const [refused, ms] = timed(() => bodyFromParsed(deep, FORM, LIMIT));
    expect(refused).toBeInstanceOf(BodyAlreadyReadError);
    for (let i = 0; i < 150_000; i++) deep = { a: deep };
    const [tooLarge, ms2] = timed(() => bodyFromParsed(deep, FORM, LIMIT));
    expect(tooLarge).toBeInstanceOf(BodyTooLargeError);
    expect(ms + ms2).toBeLessThan(10_000);
  });

  // A shallow cycle throws JSON.stringify's TypeError (a 500 through the framework), not the
  // BodyTooLargeError the "(a cycle included)" comment in bodyFromParsed suggests: nothing is
  // run either way (INFO: the comment, or a catch of TypeError there).
  it('a cycle (a custom parser) ends in an error, not a hang', () => {
    const cycle: Record<string, unknown> = { a: 'x' };
    cycle.self = cycle;
    const [error, ms] = timed(() => bodyFromParsed(cycle, FORM, LIMIT));
    expect(error).toBeInstanceOf(TypeError);
    expect(ms).toBeLessThan(5_000);
  });
});
