import { describe, expect, it } from 'vitest';
import { createMemoryLiveStreams } from '../src/index.js';

describe('in-process live-stream channel, review: memory per body byte', () => {
  // Seen failing before the log kept the body in one buffer: 105 MB for 300k one-byte chunks.
  it('a body of tiny chunks costs about its bytes in the log, not 100x', () => {
    const live = createMemoryLiveStreams();
    const lease = new AbortController();
    const before = process.memoryUsage();
    const publisher = live.publish({
      storageKey: 'k',
      fence: 1,
      leaseMs: 30_000,
      signal: lease.signal,
    });
    publisher.append({ kind: 'head', status: 200, headers: [] });
    const chunks = 300_000;
    for (let i = 0; i < chunks; i++)
      publisher.append({ kind: 'chunk', offset: i, bytes: new Uint8Array([i & 0xff]) });
    const after = process.memoryUsage();
    const grown = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
    expect(live.stats().bytes).toBe(chunks);
    void publisher.end(false);
    // The log holds ~300 KB; the rest is the test's own garbage chunks, not yet collected.
    // Before: ~105 MB (an entry object and a Uint8Array per chunk).
    expect(grown).toBeLessThan(16 * 1_048_576);
  });
});
