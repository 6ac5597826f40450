/**
 * Review of the generation-1 rule (a resume without `Idempotent-Generation` is served only
 * from fence 1) and of live streams keyed by fence: both need a key's fences never to repeat.
 * With `fenceMemoryMs: 0`, an operator `delete` of an in-progress record lets the next
 * execution take fence 1 again, so it publishes into the same Redis stream as the deleted
 * execution (which still streams until its lease is found lost).
 */
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedisLiveStreams, createRedisStore } from '../src/index.js';
import { REDIS_URL } from './targets.js';

const prefix = `idem-live-fence-reuse:${randomBytes(6).toString('hex')}:`;
let client: Redis;
let blockingClient: Redis;

beforeAll(async () => {
  client = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  blockingClient = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
});
afterAll(async () => {
  let cursor = '0';
  for (let n = 0; n < 10_000; n++) {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    if (keys.length > 0) await client.del(...keys);
    cursor = next;
    if (cursor === '0') break;
  }
  client.disconnect();
  blockingClient.disconnect();
});

const acquireInput = (key: string) => ({
  key,
  fingerprint: 'fp',
  owner: randomBytes(16).toString('base64url'),
  leaseMs: 30_000,
  retentionMs: 60_000,
});

describe('Redis: fences after an operator delete, fenceMemoryMs 0', () => {
  // Seen failing before the fix: the next acquisition was fence 1 again ('expected 1 not to be
  // 1'), and the reader of generation 1 met two heads ('expected 2 to be 1').
  it('a deleted in-progress execution and the next one never share a generation', async () => {
    const store = createRedisStore({ client, keyPrefix: `${prefix}s:`, fenceMemoryMs: 0 });
    const live = createRedisLiveStreams({
      client,
      blockingClient,
      store,
      keyPrefix: `${prefix}l:`,
      blockMs: 500,
      endGraceMs: 300,
    });
    const firstInput = acquireInput('k');
    const first = await store.acquire(firstInput);
    if (first.kind !== 'acquired') throw new Error('not acquired');
    const lease = new AbortController();
    const one = live.publish({
      storageKey: 'k',
      fence: first.fence,
      leaseMs: 5_000,
      signal: lease.signal,
    });
    one.append({ kind: 'head', status: 200, headers: [['content-type', 'text/event-stream']] });
    one.append({ kind: 'chunk', offset: 0, bytes: new TextEncoder().encode('id: 1\ndata: A\n\n') });
    expect(await store.admin.delete('k')).toEqual({ deleted: true });
    // Deleted as before: nothing to inspect, the deleted execution can no longer complete.
    expect(await store.admin.inspect('k')).toBeUndefined();
    expect(
      await store.extend({
        key: 'k',
        owner: firstInput.owner,
        leaseMs: 5_000,
        retentionMs: 60_000,
      }),
    ).toEqual({ ok: false, reason: 'not_owner' });
    const second = await store.acquire(acquireInput('k'));
    if (second.kind !== 'acquired') throw new Error('not acquired');
    const two = live.publish({
      storageKey: 'k',
      fence: second.fence,
      leaseMs: 5_000,
      signal: lease.signal,
    });
    two.append({ kind: 'head', status: 200, headers: [['content-type', 'text/event-stream']] });
    two.append({ kind: 'chunk', offset: 0, bytes: new TextEncoder().encode('id: 1\ndata: B\n\n') });
    await Promise.all([one.end(false), two.end(false)]);
    const reader = live.open({ storageKey: 'k', fence: first.fence });
    const read = await reader.next({ waitMs: 0, maxEntries: 20 });
    reader.close();
    lease.abort();
    const heads =
      read.status === 'entries' ? read.entries.filter((entry) => entry.kind === 'head').length : 0;
    expect(second.fence).not.toBe(first.fence);
    expect(heads).toBe(1);
  });
});
