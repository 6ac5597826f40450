// Mutation audit (mutcore): the stored outcome's encoding and its readers. README: "stored
// outcomes as bytes plus JSON metadata"; what does not open or decode is OUTCOME_CORRUPT, never
// a replay; an encoding carries "a 4-byte magic and version".
import { describe, expect, it } from 'vitest';
import {
  decodeOutcome,
  encodeOutcome,
  InvalidInputError,
  OutcomeCorruptError,
  openStoredOutcome,
} from '../src/index.js';

/** An encoding by hand: magic, version, the metadata's length (4 bytes), metadata, body. */
function encoding(
  metaJson: string,
  body: number[] = [],
  options: { version?: number; lengthHigh?: number } = {},
) {
  const meta = new TextEncoder().encode(metaJson);
  const length = meta.length + (options.lengthHigh ?? 0) * 2 ** 16;
  return Uint8Array.from([
    0x49,
    0x44,
    0x4d,
    options.version ?? 1,
    (length >>> 24) & 0xff,
    (length >>> 16) & 0xff,
    (length >>> 8) & 0xff,
    length & 0xff,
    ...meta,
    ...body,
  ]);
}

describe('mutcore: decodeOutcome', () => {
  it('reads a well-formed encoding (the helper is right)', () => {
    const decoded = decodeOutcome(encoding('{"a":1}', [7, 8]));
    expect(decoded.meta).toEqual({ a: 1 });
    expect([...decoded.body]).toEqual([7, 8]);
  });

  // Mutant: metadata that is a JSON array accepted.
  it('refuses metadata that is an array: OUTCOME_CORRUPT', () => {
    expect(() => decodeOutcome(encoding('[1,2]'))).toThrow(OutcomeCorruptError);
    expect(() => decodeOutcome(encoding('"text"'))).toThrow(OutcomeCorruptError);
  });

  // Mutant: the version byte not checked (a future format read as this one).
  it('refuses another format version: OUTCOME_CORRUPT', () => {
    expect(() => decodeOutcome(encoding('{}', [], { version: 2 }))).toThrow(
      /unknown format or version/,
    );
  });
});

describe('mutcore: encodeOutcome', () => {
  // Mutant: metadata that is an array accepted (it would not decode again).
  it('refuses metadata that is an array: INVALID_INPUT', () => {
    expect(() => encodeOutcome({ meta: [] as never, body: new Uint8Array() })).toThrow(
      InvalidInputError,
    );
  });
});

describe('mutcore: openStoredOutcome with a known metadata view', () => {
  const settings = { codec: undefined, maxOutcomeBytes: 1_000_000, storeTimeoutMs: 1_000 };
  const view = { json: '{"kind":"value"}', meta: { kind: 'value' } };

  it('takes the known metadata unparsed when the bytes carry exactly it', () => {
    const opened = openStoredOutcome(settings, 'k', encoding(view.json, [1, 2, 3]), view);
    expect(opened).toMatchObject({ meta: view.meta });
    expect([...(opened as { body: Uint8Array }).body]).toEqual([1, 2, 3]);
  });

  // Mutant: only the low bytes of the metadata length compared (a length of 65,536 + n read as n).
  it('does not take it when the length differs in its high bytes: OUTCOME_CORRUPT', () => {
    const forged = encoding(view.json, [1, 2, 3], { lengthHigh: 1 });
    expect(() => openStoredOutcome(settings, 'k', forged, view)).toThrow(OutcomeCorruptError);
  });
});
