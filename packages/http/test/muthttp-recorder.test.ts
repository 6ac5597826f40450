import { createMemoryStore } from '@idem/store-memory';
import { describe, expect, it } from 'vitest';
import { CaptureBuffer } from '../src/capture-buffer.js';
import { bodyFromBytes, createIdempotencyHandler, OUTCOME_FORMAT } from '../src/index.js';

// The recorder's bounds and its adapter contract (README "For framework adapters", "Size"),
// where a mutation survived every other test (mutation audit, muthttp).

describe('the capture buffer', () => {
  it('never grows its storage past the cap, whatever the chunk sizes', () => {
    const limit = 1_100;
    const buffer = new CaptureBuffer(limit, {
      format: OUTCOME_FORMAT,
      status: 200,
      headers: [],
      chunks: [],
    });
    const chunk = new Uint8Array(300).fill(97);
    for (let i = 0; i < 3; i++) {
      buffer.append(chunk);
      const held = buffer.held();
      expect(held?.length).toBe(300 * (i + 1));
      expect(held?.buffer.byteLength).toBeLessThanOrEqual(limit);
    }
    expect(buffer.overflowed).toBe(false);
  });
});

describe('failAtEnd', () => {
  it('releases the key once the body ends normally: the retry runs, nothing is replayed', async () => {
    const handler = createIdempotencyHandler<null>({ store: createMemoryStore(), scope: 'global' });
    const begin = () =>
      handler.begin({
        native: null,
        method: 'POST',
        url: '/jobs',
        header: (name) => (name === 'idempotency-key' ? 'f-1' : undefined),
        readBody: async () => bodyFromBytes(new Uint8Array(), null),
      });
    const first = await begin();
    expect(first.action).toBe('execute');
    if (first.action !== 'execute') return;
    const { recorder } = first;
    expect(recorder.lateStart()).toBeUndefined();
    expect(recorder.start(200, new Headers({ 'content-type': 'text/plain' }))).toBe(true);
    recorder.capture(new TextEncoder().encode('partial'));
    // The handler failed, but a stream helper that caught the throw ends the body normally.
    recorder.failAtEnd();
    await recorder.finish();
    const retry = await begin();
    expect(retry.action).toBe('execute');
    if (retry.action === 'execute') await retry.recorder.fail(new Error('done'));
  });
});
