import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { OUTCOME_FORMAT, REPLAYED_HEADER, replayResponse } from '../src/index.js';
import { prepareReplay } from '../src/replay.js';

// A replay keeps recorded header pairs as they are when a `Headers` would not change them,
// and otherwise normalizes them through `Headers`: either way the replay carries exactly the
// pairs `new Headers(recorded)` plus the replay marker iterates (or fails as it does).
function viaHeaders(recorded: [string, string][]): [string, string][] | 'refused' {
  try {
    const headers = new Headers(recorded);
    headers.set(REPLAYED_HEADER, 'true');
    return [...headers];
  } catch {
    return 'refused';
  }
}

function replayed(recorded: [string, string][]): [string, string][] | 'refused' {
  try {
    const outcome = {
      meta: { format: OUTCOME_FORMAT, status: 200, headers: recorded, chunks: [1] },
      body: new Uint8Array([1]),
    };
    return prepareReplay(outcome).headers.map(([name, value]) => [name, value]);
  } catch {
    return 'refused';
  }
}

const name = fc.oneof(
  fc.constantFrom('content-type', 'etag', 'link', 'vary', 'Location', 'x-a', 'idempotent-replayed'),
  fc.string({
    unit: fc.constantFrom('a', 'B', '-', ' ', '\u00e9', '_'),
    minLength: 0,
    maxLength: 4,
  }),
);
const value = fc.string({
  unit: fc.constantFrom('a', ' ', '\t', '"', '\u00e9', '\u0101', '\n', '\x7f', ';'),
  maxLength: 6,
});

describe('replayed headers', () => {
  it('are the pairs a Headers gives, kept or normalized', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(name, value), { maxLength: 5 }),
        fc.boolean(),
        (pairs, sort) => {
          const recorded = sort ? [...pairs].sort((a, b) => (a[0] < b[0] ? -1 : 1)) : pairs;
          expect(replayed(recorded)).toEqual(viaHeaders(recorded));
        },
      ),
      { numRuns: 2_000 },
    );
  });

  it('are normalized as a Headers does where a Headers would change them', () => {
    const cases: [string, string][][] = [
      [['etag', 'a ']],
      [['etag', ' a']],
      [['etag', 'a\t']],
      [['ETag', 'a']],
      [
        ['vary', 'b'],
        ['etag', 'a'],
      ],
      [
        ['vary', 'a'],
        ['vary', 'b'],
      ],
      [['content-language', 'caf\u00e9']],
      [
        ['x-z', 'a'],
        [REPLAYED_HEADER, 'false'],
      ],
    ];
    for (const recorded of cases) expect(replayed(recorded)).toEqual(viaHeaders(recorded));
  });

  it('keep plain, sorted pairs as they are', () => {
    expect(
      replayed([
        ['content-type', 'application/json; charset=utf-8'],
        ['etag', 'W/"2a"'],
        ['x-z', ''],
      ]),
    ).toEqual([
      ['content-type', 'application/json; charset=utf-8'],
      ['etag', 'W/"2a"'],
      [REPLAYED_HEADER, 'true'],
      ['x-z', ''],
    ]);
  });
});

describe('the recorded reason phrase', () => {
  // Typed as a string: the test also stores what a well-typed writer could not.
  const outcome = (reason: unknown) => ({
    meta: {
      format: OUTCOME_FORMAT,
      status: 201,
      reason: reason as string,
      headers: [],
      chunks: [1],
    },
    body: new Uint8Array([120]),
  });

  it('is replayed as the status text, and none is none', () => {
    expect(prepareReplay(outcome('Made \u00e9t\u00e9')).reason).toBe('Made \u00e9t\u00e9');
    expect(replayResponse(outcome('Made')).statusText).toBe('Made');
    expect(prepareReplay(outcome(undefined)).reason).toBeUndefined();
    expect(replayResponse(outcome(undefined)).statusText).toBe('');
  });

  it('that HTTP could not carry makes the outcome unreadable, never a broken status line', () => {
    for (const reason of [
      '',
      'a\r\nX-Injected: 1',
      'a\nb',
      '\u0100',
      '\u0000',
      'x'.repeat(1025),
      7,
      null,
    ])
      expect(() => prepareReplay(outcome(reason)), String(reason)).toThrow(
        expect.objectContaining({ code: 'OUTCOME_CORRUPT' }),
      );
  });
});
