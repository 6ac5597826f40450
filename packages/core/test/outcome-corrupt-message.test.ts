import { describe, expect, it } from 'vitest';
import { decodeOutcome, encodeOutcome, OutcomeCorruptError } from '../src/index.js';

// otelrev review: a record whose metadata was not valid JSON failed with the parser's
// message in its own, and V8 quotes the text it failed on ("Unexpected token 'x',
// ..."9Z4Q","n":x}" is not valid JSON"): part of the recorded response went
// wherever the error went (logs, @idem/otel's replay span status and exception). The
// message now says what failed only; the parser's error is its `cause`.
describe('OUTCOME_CORRUPT for metadata that is not JSON', () => {
  it('quotes none of the stored metadata', () => {
    // V8 quotes about ten characters either side of where it failed.
    const secret = '9Z4Q';
    const bytes = encodeOutcome({
      meta: { token: `tok_${secret}`, n: 1 },
      body: new Uint8Array([1]),
    });
    // Corrupt a byte inside the metadata, next to the secret: the `1` of `"n":1`.
    const at = Buffer.from(bytes).indexOf('"n":1') + 4;
    bytes[at] = 'x'.charCodeAt(0);
    let thrown: unknown;
    try {
      decodeOutcome(bytes);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(OutcomeCorruptError);
    expect((thrown as Error).message).not.toContain(secret);
    expect(String((thrown as Error).stack)).not.toContain(secret);
    expect((thrown as Error).cause).toBeInstanceOf(SyntaxError);
  });
});
