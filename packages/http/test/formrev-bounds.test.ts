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

const JSON_TYPE = 'application/json';

describe('formrev: bodyFromParsed on huge parsed forms stays bounded', () => {
  // formfix: a parsed form is refused whatever it holds, before its JSON text is written: the
  // bounds below hold for a JSON body (the canonical-JSON path), and a form is refused at once.
  it('wide: 50k pairs (~0.9 MB of JSON text) fingerprinted as JSON; as a form refused at once', () => {
    const wide: Record<string, string> = {};
    for (let i = 0; i < 50_000; i++) wide[`k${i}`] = `v${i}`;
    const [body, ms] = timed(() => bodyFromParsed(wide, JSON_TYPE, LIMIT));
    expect((body as { kind: string }).kind).toBe('json');
    wide.k49999 = '50%';
    const [refused, ms2] = timed(() => bodyFromParsed(wide, FORM, LIMIT));
    expect(refused).toBeInstanceOf(BodyAlreadyReadError);
    expect(ms + ms2).toBeLessThan(10_000);
    expect(ms2).toBeLessThan(50);
  });

  it('deep: 50k levels (past JSON.stringify) fingerprinted as JSON, refused as a form; 200k levels 413', () => {
    let deep: unknown = '50%';
    for (let i = 0; i < 50_000; i++) deep = { a: deep };
    const [body, ms] = timed(() => bodyFromParsed(deep, JSON_TYPE, LIMIT));
    expect((body as { kind: string }).kind).toBe('json');
    expect(bodyFromParsed.bind(null, deep, FORM, LIMIT)).toThrow(BodyAlreadyReadError);
    for (let i = 0; i < 150_000; i++) deep = { a: deep };
    const [tooLarge, ms2] = timed(() => bodyFromParsed(deep, JSON_TYPE, LIMIT));
    expect(tooLarge).toBeInstanceOf(BodyTooLargeError);
    expect(ms + ms2).toBeLessThan(10_000);
  });

  // Was INFO, fixed: a shallow cycle threw JSON.stringify's TypeError (a 500 saying nothing
  // useful). A cycle under a JSON type is now a BodyAlreadyReadError naming the fix; under a
  // form type the parsed object is refused before its text is written.
  it('a cycle (a custom parser) ends in a BodyAlreadyReadError naming the fix, not a TypeError or a hang', () => {
    const cycle: Record<string, unknown> = { a: 'x' };
    cycle.self = cycle;
    for (const type of [FORM, JSON_TYPE]) {
      const [error, ms] = timed(() => bodyFromParsed(cycle, type, LIMIT));
      expect(error).toBeInstanceOf(BodyAlreadyReadError);
      expect((error as Error).message).toMatch(/mount the middleware before the body parser/);
      expect(ms).toBeLessThan(5_000);
    }
    const [error] = timed(() => bodyFromParsed(cycle, JSON_TYPE, LIMIT));
    expect((error as Error).message).toMatch(/no JSON text/);
  });
});
