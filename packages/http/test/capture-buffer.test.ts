import { encodeOutcome } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { CaptureBuffer } from '../src/capture-buffer.js';

// The buffer decides "over the cap" from its own running count; it must agree exactly with
// the size of the outcome it hands to the store.
describe('CaptureBuffer', () => {
  const meta = {
    format: 'idem/http/v1',
    status: 201,
    headers: [
      ['content-type', 'text/plain; charset=\u00e9'],
      ['location', '/x/1'],
    ] as [string, string][],
    chunks: [],
  };

  it('overflows exactly when the encoded outcome would pass the limit', () => {
    const chunkSizes = [1, 9, 10, 99, 100, 1_000, 3];
    for (let limit = 60; limit < 1_400; limit += 7) {
      const buffer = new CaptureBuffer(limit, meta);
      let body = 0;
      const taken: number[] = [];
      for (const size of chunkSizes) {
        buffer.append(new Uint8Array(size).fill(size & 0xff));
        body += size;
        taken.push(size);
        const encoded = encodeOutcome({
          meta: { ...meta, chunks: taken },
          body: new Uint8Array(body),
        }).length;
        expect(buffer.overflowed, `limit ${limit}, ${taken.length} chunks`).toBe(encoded > limit);
        if (buffer.overflowed) break;
        expect(encodeOutcome(buffer.outcome()).length).toBe(encoded);
      }
    }
  });

  it('keeps the bytes and chunk lengths in order', () => {
    const buffer = new CaptureBuffer(1_000_000, meta);
    const chunks = Array.from({ length: 200 }, (_, i) => new Uint8Array(i + 1).fill(i));
    for (const chunk of chunks) buffer.append(chunk);
    const outcome = buffer.outcome();
    expect(outcome.meta.chunks).toEqual(chunks.map((c) => c.length));
    let offset = 0;
    for (const chunk of chunks) {
      expect(outcome.body.subarray(offset, offset + chunk.length)).toEqual(chunk);
      offset += chunk.length;
    }
    expect(outcome.body.length).toBe(offset);
  });
});
