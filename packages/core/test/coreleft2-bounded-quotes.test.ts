/**
 * coreleft2: error messages quoted a refused string in full (a clock answering a 10 MB string
 * put 10 MB in the message; others cut it at their own length). Every idem package now quotes
 * user strings with one helper, `quotedInput`: in full up to 64 characters, else the first 64
 * and the length.
 */
import { describe, expect, it } from 'vitest';
import {
  createIdempotency,
  quotedInput,
  readClock,
  shownInput,
  unknownOptionMessage,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { thrown } from './support/settle.js';

const HUGE = 10_000_000;
const thrownError = (fn: () => unknown) => thrown(fn) as Error;

describe('quotedInput', () => {
  it('quotes a string of at most 64 characters in full, as JSON', () => {
    expect(quotedInput('abc')).toBe('"abc"');
    expect(quotedInput('')).toBe('""');
    expect(quotedInput('x'.repeat(64))).toBe(JSON.stringify('x'.repeat(64)));
    expect(quotedInput('a"b\n')).toBe('"a\\"b\\n"');
  });

  it('cuts a longer one to its first 64 characters and says how long it was', () => {
    expect(quotedInput('x'.repeat(65))).toBe(`${JSON.stringify('x'.repeat(64))}… (65 chars)`);
    const text = quotedInput('y'.repeat(HUGE));
    expect(text).toBe(`${JSON.stringify('y'.repeat(64))}… (${HUGE} chars)`);
    expect(quotedInput('abcdef', 3)).toBe('"abc"… (6 chars)');
  });

  it('never cuts a surrogate pair in half', () => {
    const text = `${'x'.repeat(63)}😀${'z'.repeat(10)}`;
    expect(quotedInput(text)).toBe(`${JSON.stringify('x'.repeat(63))}… (${text.length} chars)`);
  });

  it('shownInput: a string quoted and bounded, anything else by shownValue', () => {
    expect(shownInput('q'.repeat(HUGE)).length).toBeLessThan(100);
    expect(shownInput(Number.NaN)).toBe('NaN');
    expect(shownInput(undefined)).toBe('undefined');
    expect(shownInput({ toString: () => 'x'.repeat(HUGE) })).toBe('a object');
  });
});

describe('core messages that quoted a caller string', () => {
  it('a clock that answers a huge string: createIdempotency refuses it with a short message', () => {
    const error = thrownError(() =>
      createIdempotency({
        store: new FakeStore(),
        clock: { now: () => '9'.repeat(HUGE) as never },
      }),
    );
    expect(error.message).toMatch(/^clock\.now\(\) must return a finite number/);
    expect(error.message).toContain(`… (${HUGE} chars)`);
    expect(error.message.length).toBeLessThan(300);
  });

  it('readClock (a store on the adapter kit) with a clock answering a huge string', () => {
    const error = thrownError(() => readClock({ now: () => 'd'.repeat(HUGE) as never }));
    expect(error.message).toMatch(
      /^The clock returned an invalid time: "d{64}"… \(10000000 chars\)$/,
    );
  });

  it('an unknown option whose name is huge is cut; a short one is named as before', () => {
    const message = unknownOptionMessage('', { ['k'.repeat(HUGE)]: 1 }, { store: true }, 'x');
    expect(message).toContain(`… (${HUGE} chars) is not an option of x`);
    expect((message as string).length).toBeLessThan(300);
    expect(unknownOptionMessage('', { stroe: 1 }, { store: true }, 'x')).toBe(
      'stroe is not an option of x',
    );
  });

  it('an unknown option whose short name could forge a log line is quoted', () => {
    // A newline and what follows it would read as a log line of its own, unquoted.
    const forged = 'a\n[error] payment refused';
    expect(unknownOptionMessage('', { [forged]: 1 }, { store: true }, 'x')).toBe(
      `${JSON.stringify(forged)} is not an option of x`,
    );
    expect(unknownOptionMessage('', { 'a\u0007b': 1 }, { store: true }, 'x')).toBe(
      '"a\\u0007b" is not an option of x',
    );
    expect(unknownOptionMessage('', { 'two words': 1 }, { store: true }, 'x')).toBe(
      '"two words" is not an option of x',
    );
    expect(unknownOptionMessage('o.', { max_bytes: 1 }, { store: true }, 'x')).toBe(
      'o.max_bytes is not an option of x',
    );
  });
});
