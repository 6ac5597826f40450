// `delete` says what it forgot (as read just before it): an in-progress execution that can no
// longer complete, a released key with nothing recorded, a completed outcome (test/redis.test.ts).
import { randomBytes } from 'node:crypto';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { REDIS_URL, redisUnderPrefix, runInProcess } from './in-process.js';

describe('idem delete says what it forgot', () => {
  const redis = redisUnderPrefix('cli-delete-says');
  const { prefix } = redis;
  const store = () => createRedisStore({ client: redis.client(), keyPrefix: prefix });
  const args = (key: string) => [key, '--storage-key', '--store', REDIS_URL, '--prefix', prefix];
  const acquire = (key: string, owner: string) =>
    store().acquire({ key, owner, fingerprint: 'fp', leaseMs: 60_000, retentionMs: 60_000 });

  it('an in-progress record: its owner and fence, and that it can no longer complete', async () => {
    const key = randomBytes(32).toString('hex');
    expect(await acquire(key, 'owner-running')).toMatchObject({ kind: 'acquired', fence: 1 });
    const deleted = await runInProcess('delete', ...args(key), '--force');
    expect(deleted).toEqual({
      code: 0,
      lines: [
        `deleted ${key}`,
        'it was in progress (owner owner-running, as read just before: fence 1): that execution can no longer complete, and the next request with this key executes again, possibly while it still runs',
      ],
    });
    const json = await runInProcess('delete', ...args(key), '--json');
    expect(json.code).toBe(3);
  });

  it('a released record: nothing was recorded under it (JSON: `was`)', async () => {
    const key = randomBytes(32).toString('hex');
    await acquire(key, 'owner-failed');
    expect(await store().release({ key, owner: 'owner-failed', retentionMs: 60_000 })).toEqual({
      ok: true,
    });
    const json = await runInProcess('delete', ...args(key), '--json');
    expect(json.code).toBe(0);
    expect(JSON.parse(json.lines[0] as string)).toEqual({
      storageKey: key,
      deleted: true,
      was: { status: 'released', owner: 'owner-failed', fence: 1, outcomeBytes: 0 },
    });
  });
});
