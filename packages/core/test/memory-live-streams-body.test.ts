import { describe, expect, it } from 'vitest';
import { createMemoryLiveStreams, type LiveEntry } from '../src/index.js';

const generation = { storageKey: 'k', fence: 1 };

describe('createMemoryLiveStreams: a chunk that brings the body so far', () => {
  it('is kept by reference (readers read views of that body), and a later chunk without one is copied, never written into it', async () => {
    const live = createMemoryLiveStreams();
    const lease = new AbortController();
    const publisher = live.publish({ ...generation, leaseMs: 10_000, signal: lease.signal });
    publisher.append({ kind: 'head', status: 200, headers: [] });
    // The publisher's own body: 6 bytes, of which the chunk is the last 3.
    const capture = new Uint8Array(16);
    capture.set([1, 2, 3, 4, 5, 6]);
    const body = capture.subarray(0, 6);
    publisher.append({
      kind: 'chunk',
      offset: 0,
      bytes: body.subarray(0, 3),
      body: body.subarray(0, 3),
    });
    publisher.append({ kind: 'chunk', offset: 3, bytes: body.subarray(3), body });
    const reader = live.open(generation);
    const read = await reader.next({ waitMs: 0, maxEntries: 10 });
    const chunk =
      read.status === 'entries'
        ? (read.entries[1] as Extract<LiveEntry, { kind: 'chunk' }>)
        : undefined;
    expect([...(chunk?.bytes ?? [])]).toEqual([1, 2, 3, 4, 5, 6]);
    // No copy: the reader's bytes are the publisher's buffer.
    expect(chunk?.bytes.buffer).toBe(capture.buffer);
    expect(live.stats().bytes).toBe(6);

    publisher.append({ kind: 'chunk', offset: 6, bytes: new Uint8Array([7, 8]) });
    const more = await reader.next({ waitMs: 0, maxEntries: 10 });
    const next =
      more.status === 'entries'
        ? (more.entries[0] as Extract<LiveEntry, { kind: 'chunk' }>)
        : undefined;
    expect([...(next?.bytes ?? [])]).toEqual([7, 8]);
    expect(next?.bytes.buffer).not.toBe(capture.buffer);
    // The publisher's memory past its body is untouched.
    expect([...capture.subarray(6, 8)]).toEqual([0, 0]);
    await publisher.end(true);
    reader.close();
    expect(live.stats()).toEqual({ generations: 0, readers: 0, bytes: 0 });
  });
});

describe('createMemoryLiveStreams: a publisher whose lease is already lost', () => {
  it('ends its generation with an error at once (a reader never waits on a generation nobody will end)', async () => {
    const live = createMemoryLiveStreams();
    const lease = new AbortController();
    lease.abort(new Error('lost'));
    const publisher = live.publish({ ...generation, leaseMs: 10_000, signal: lease.signal });
    publisher.append({ kind: 'head', status: 200, headers: [] });
    publisher.append({ kind: 'chunk', offset: 0, bytes: new Uint8Array([1]) });
    const reader = live.open(generation);
    const read = await reader.next({ waitMs: 0, maxEntries: 10 });
    // Either nothing to attach to, or a generation that already ended with an error.
    if (read.status === 'entries') expect(read.entries.at(-1)).toEqual({ kind: 'end', ok: false });
    else expect(read.status).toBe('missing');
    expect(live.stats().generations).toBe(0);
  });
});
