// rev30a: `idem release --owner` echoed the owner as typed, whole, in the "changed" message
// (text and --json): an owner pasted by mistake (a whole log line, 100 KB) made a message of
// its size, where coreerr30 bounded every other echo of what the operator typed to its first
// 200 characters then its length.
import { randomBytes } from 'node:crypto';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { REDIS_URL, redisUnderPrefix, runInProcess as run } from './in-process.js';

describe('rev30a: release --owner echoes at most 200 characters of the owner typed', () => {
  const redis = redisUnderPrefix('rev30a-cli');
  const store = () => createRedisStore({ client: redis.client(), keyPrefix: redis.prefix });

  it('a 100 KB --owner that does not hold the key: exit 5, the owner shown bounded', async () => {
    const key = randomBytes(32).toString('hex');
    const holder = `holder-${randomBytes(4).toString('hex')}`;
    expect(
      await store().acquire({
        key,
        owner: holder,
        leaseMs: 60_000,
        fingerprint: 'f',
        retentionMs: 600_000,
      }),
    ).toMatchObject({ kind: 'acquired' });
    const typed = 'o'.repeat(100_000);
    const args = ['release', key, '--storage-key', '--store', REDIS_URL, '--prefix', redis.prefix];
    const text = await run(...args, '--owner', typed);
    expect(text.code).toBe(5);
    const shown = text.lines.join('\n');
    expect(shown).toContain(`(owner ${'o'.repeat(200)}… (100000 chars))`);
    expect(shown).toContain(`owner ${holder} holds it now`);
    expect(shown.length).toBeLessThan(2_000);
    const json = await run(...args, '--owner', typed, '--json');
    expect(json.code).toBe(5);
    expect((json.lines[0] as string).length).toBeLessThan(2_000);
    // Left as it is: the holder still has it.
    expect(await store().get(key)).toMatchObject({ status: 'in_progress' });
  });
});
