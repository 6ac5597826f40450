import { encodeOutcome } from '@idem/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CaptureBuffer } from '../src/capture-buffer.js';

// The buffer sizes the outcome's metadata by counting UTF-8 bytes itself: its count must be
// the encoded size whatever the header values hold (non-ASCII, surrogate pairs, lone halves).
describe('CaptureBuffer sizing of the metadata', () => {
  it('overflows exactly at the encoded size, for any header value', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), fc.integer({ min: 1, max: 64 }), (value, size) => {
        const meta = {
          format: 'idem/http/v1',
          status: 200,
          headers: [['content-type', value]] as [string, string][],
          chunks: [],
        };
        const encoded = encodeOutcome({
          meta: { ...meta, chunks: [size] },
          body: new Uint8Array(size),
        }).length;
        for (const limit of [encoded - 1, encoded]) {
          const buffer = new CaptureBuffer(limit, meta);
          buffer.append(new Uint8Array(size));
          expect(buffer.overflowed).toBe(encoded > limit);
        }
      }),
      { numRuns: 500 },
    );
  });
});
