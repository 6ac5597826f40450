// adminfix: `idem release --owner/--fence` releases only the execution the operator
// inspected. Without them, a release that lands after the inspected lease passed and a retry
// took the key over cuts off the healthy retry instead.
import { randomBytes } from 'node:crypto';
import { createRedisStore } from '@idem/store-redis';
import { describe, expect, it } from 'vitest';
import { REDIS_URL, redisUnderPrefix, runInProcess as run } from './in-process.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('adminfix: idem release --owner/--fence on Redis', () => {
  const redis = redisUnderPrefix('adminfix-cli');
  const store = () => createRedisStore({ client: redis.client(), keyPrefix: redis.prefix });
  const common = (key: string) => [
    key,
    '--storage-key',
    '--store',
    REDIS_URL,
    '--prefix',
    redis.prefix,
  ];
  const lease = { fingerprint: 'f', retentionMs: 600_000 };

  /** A key whose first execution was inspected, then its lease passed and a retry took it over. */
  async function takenOver() {
    const key = randomBytes(32).toString('hex');
    const first = { key, owner: `first-${randomBytes(4).toString('hex')}`, leaseMs: 300, ...lease };
    expect(await store().acquire(first)).toMatchObject({ kind: 'acquired', fence: 1 });
    const seen = await run('inspect', ...common(key), '--json');
    const inspected = JSON.parse(seen.lines[0] as string) as { owner: string; fence: number };
    expect(inspected).toMatchObject({ owner: first.owner, fence: 1 });
    await sleep(600);
    const retry = {
      key,
      owner: `retry-${randomBytes(4).toString('hex')}`,
      leaseMs: 60_000,
      ...lease,
    };
    expect(await store().acquire(retry)).toMatchObject({
      kind: 'acquired',
      fence: 2,
      takeover: true,
    });
    return { key, inspected, retry };
  }

  it('the inspected execution was taken over: exit 5 changed, the retry keeps the key', async () => {
    const { key, inspected, retry } = await takenOver();
    const expect5 = ['--owner', inspected.owner, '--fence', String(inspected.fence)];
    const json = await run('release', ...common(key), ...expect5, '--json');
    expect(json.code).toBe(5);
    expect(JSON.parse(json.lines[0] as string)).toEqual({
      storageKey: key,
      ok: false,
      reason: 'changed',
      owner: retry.owner,
      fence: 2,
      error: {
        code: 'changed',
        message: expect.stringContaining('is no longer the execution you gave'),
      },
    });
    const text = await run('release', ...common(key), '--owner', inspected.owner);
    expect(text.code).toBe(5);
    expect(text.lines.join('\n')).toMatch(
      new RegExp(
        `no longer the execution you gave \\(owner ${inspected.owner}\\): owner ${retry.owner} holds it now at fence 2; left as it is`,
      ),
    );
    expect(await run('release', ...common(key), '--fence', '1')).toMatchObject({ code: 5 });
    const record = await store().get(key);
    expect(record).toMatchObject({ status: 'in_progress', owner: retry.owner, fence: 2 });
    // The retry completes: nothing cut it off.
    const done = { key, owner: retry.owner, retentionMs: 600_000, outcome: new Uint8Array([1]) };
    expect(await store().complete(done)).toEqual({ ok: true });
  });

  it('the execution given still holds the key: released as without the options', async () => {
    const { key, retry } = await takenOver();
    const released = await run(
      'release',
      ...common(key),
      '--owner',
      retry.owner,
      '--fence',
      '2',
      '--json',
    );
    expect(released.code).toBe(0);
    expect(JSON.parse(released.lines[0] as string)).toEqual({
      storageKey: key,
      ok: true,
      fence: 3,
      previousOwner: retry.owner,
    });
    expect(await store().get(key)).toMatchObject({ status: 'released', fence: 3 });
  });

  it.each([
    ['--owner on inspect', ['inspect'], ['--owner', 'x']],
    ['--fence on delete', ['delete'], ['--fence', '1']],
    ['a fractional fence', ['release'], ['--fence', '1.5']],
    ['a negative fence', ['release'], ['--fence', '-1']],
    ['a fence past 2^53', ['release'], ['--fence', '9007199254740993']],
    ['an empty owner', ['release'], ['--owner', '']],
  ])('%s is a usage error, nothing sent', async (_what, action, extra) => {
    const key = randomBytes(32).toString('hex');
    const result = await run(...action, ...common(key), ...extra, '--json');
    expect(result.code).toBe(2);
    expect(JSON.parse(result.lines[0] as string)).toMatchObject({ error: { code: 'usage' } });
  });
});
