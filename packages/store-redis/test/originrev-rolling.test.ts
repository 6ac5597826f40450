/**
 * originrev (adversarial review of the origin guarantee), README "Rolling deploys across the
 * origin change": a build from before origins refuses a format-2 record ("unknown record
 * format", STORE_UNAVAILABLE): it fails closed, never taking it for a free key, and writes
 * nothing. Checked with that build's scripts, frozen (scripts-before-origin.json: the
 * ACQUIRE, GET, COMPLETE, RELEASE and EXTEND scripts of afdf999^, never regenerated), against
 * a format-2 record this build writes (a takeover), live and with its lease passed.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createRedisStore } from '../src/index.js';
import { packDoubles, packDurations } from '../src/scripts.js';
import { owner, standaloneSession } from './mutaudit-helpers.js';

const before = JSON.parse(
  readFileSync(new URL('./scripts-before-origin.json', import.meta.url), 'utf8'),
) as Record<'ACQUIRE_LUA' | 'GET_LUA' | 'COMPLETE_LUA' | 'RELEASE_LUA' | 'EXTEND_LUA', string>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('originrev: the build before origins meets a format-2 record', () => {
  const session = standaloneSession();

  it('its acquire, get, complete, release and extend all refuse it and write nothing (live, and past its lease)', async () => {
    const store = createRedisStore({ client: session.client, keyPrefix: session.prefix() });
    const input = (who: string, leaseMs: number) => ({
      key: 'k',
      fingerprint: 'fp',
      owner: who,
      leaseMs,
      retentionMs: 60_000,
    });
    const first = owner();
    await store.acquire(input(first, 50));
    await sleep(80);
    const taker = owner();
    expect(await store.acquire(input(taker, 100))).toMatchObject({ origin: first });
    const key = store.redisKey('k');
    const fence = store.fenceKey('k');
    const value = await session.raw.getBuffer(key);
    expect(value?.[0]).toBe(2);
    const oldScripts = (who: string) =>
      [
        [before.ACQUIRE_LUA, 2, key, fence, 'fp', who, packDurations(30_000, 60_000, 86_400_000)],
        [before.GET_LUA, 1, key],
        [before.COMPLETE_LUA, 2, key, fence, taker, packDoubles(60_000, 86_400_000), 'x', '0'],
        [before.RELEASE_LUA, 2, key, fence, taker, '60000', '86400000'],
        [before.EXTEND_LUA, 2, key, fence, taker, '30000', '60000', '86400000'],
      ] as const;
    for (const phase of ['live', 'lease passed'] as const) {
      if (phase === 'lease passed') await sleep(150);
      for (const who of [owner(), taker]) {
        for (const [lua, ...args] of oldScripts(who)) {
          const answer = await (
            session.raw as unknown as { eval(...a: unknown[]): Promise<unknown> }
          )
            .eval(lua, ...args)
            .then(
              (reply) => ({ reply }),
              (error: unknown) => ({ error: String(error) }),
            );
          expect(answer, `${phase}: ${lua.slice(0, 60)}`).toEqual({
            error: expect.stringMatching(/unknown record format/),
          });
        }
      }
      expect((await session.raw.getBuffer(key))?.equals(value as Buffer)).toBe(true);
    }
  });
});
