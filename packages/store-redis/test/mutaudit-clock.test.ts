/**
 * Mutation audit (store-redis): Redis's clock, not the client's, decides every lease and
 * retention, to the millisecond.
 *
 * - The client and the shared Redis run on one machine, so their clocks agree and no other
 *   test could tell a script that read the client's clock (passed as an argument) from one
 *   that reads `TIME`: here the client's `Date.now` is skewed by an hour either way.
 * - "A lease is live until its end" (`now < leaseUntil`) was only caught by chance (a loop
 *   about the fence memory that happened to hit the last millisecond): here a second owner's
 *   acquire lands in the very millisecond a 1 ms lease ends, observed by the `now` Redis
 *   reports, until it has happened a few times.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { owner, standaloneSession } from './mutaudit-helpers.js';
import { rawRecord, redisNow } from './targets.js';

const LEASE = 30_000;
const RETENTION = 60_000;
const HOUR = 3_600_000;

const session = standaloneSession();
let store: RedisStore;
afterEach(() => {
  vi.restoreAllMocks();
});

const fresh = () => {
  store = createRedisStore({ client: session.client, keyPrefix: session.prefix() });
};

describe('mutaudit: whose clock', () => {
  for (const skew of [HOUR, -HOUR]) {
    it(`a client clock ${skew > 0 ? 'an hour ahead' : 'an hour behind'} changes no deadline and no judgment`, async () => {
      fresh();
      const realNow = Date.now.bind(Date);
      vi.spyOn(Date, 'now').mockImplementation(() => realNow() + skew);
      const a = owner();
      const before = await redisNow(session.raw);
      const acquired = await store.acquire({
        key: 'k',
        fingerprint: 'fp',
        owner: a,
        leaseMs: LEASE,
        retentionMs: RETENTION,
      });
      const after = await redisNow(session.raw);
      expect(acquired.kind).toBe('acquired');
      if (acquired.kind !== 'acquired') throw new Error('unreachable');
      expect(acquired.leaseUntil).toBeGreaterThanOrEqual(before + LEASE);
      expect(acquired.leaseUntil).toBeLessThanOrEqual(after + LEASE);

      // A live 30 s lease by Redis's clock: another owner finds it, whatever the client's clock
      // says, and the `now` it is told is Redis's.
      const other = await store.acquire({
        key: 'k',
        fingerprint: 'fp',
        owner: owner(),
        leaseMs: LEASE,
        retentionMs: RETENTION,
      });
      const afterOther = await redisNow(session.raw);
      expect(other.kind).toBe('found');
      if (other.kind !== 'found') throw new Error('unreachable');
      expect(other.now).toBeGreaterThanOrEqual(before);
      expect(other.now).toBeLessThanOrEqual(afterOther);

      // Renewal and completion: deadlines by Redis's clock too.
      const beforeExtend = await redisNow(session.raw);
      const extended = await store.extend({
        key: 'k',
        owner: a,
        leaseMs: LEASE,
        retentionMs: RETENTION,
      });
      const afterExtend = await redisNow(session.raw);
      if (!extended.ok) throw new Error('the owner could not extend');
      expect(extended.leaseUntil).toBeGreaterThanOrEqual(beforeExtend + LEASE);
      expect(extended.leaseUntil).toBeLessThanOrEqual(afterExtend + LEASE);

      const beforeComplete = await redisNow(session.raw);
      expect(
        await store.complete({
          key: 'k',
          owner: a,
          outcome: new Uint8Array([7]),
          retentionMs: RETENTION,
        }),
      ).toEqual({ ok: true });
      const afterComplete = await redisNow(session.raw);
      const done = await rawRecord(session.raw, store.redisKey('k'));
      expect(done?.status).toBe('completed');
      expect(done!.expiresAt).toBeGreaterThanOrEqual(beforeComplete + RETENTION);
      expect(done!.expiresAt).toBeLessThanOrEqual(afterComplete + RETENTION);

      // The completed record is replayed (not expired by a client clock an hour ahead).
      const replay = await store.acquire({
        key: 'k',
        fingerprint: 'fp',
        owner: owner(),
        leaseMs: LEASE,
        retentionMs: RETENTION,
      });
      expect(replay).toMatchObject({ kind: 'found', record: { status: 'completed', owner: a } });
    });
  }

  it('a lease is live until its last millisecond and passed in the millisecond it ends (now < leaseUntil), observed exactly', async () => {
    fresh();
    const NEXT_LEASE = 60_000;
    let atTheEnd = 0;
    let rounds = 0;
    const started = performance.now();
    // Bounded: at most 200 rounds or 20 s; stops once the last millisecond was hit 3 times. In
    // a round another owner asks again and again (at most 500 times) until it takes the key,
    // so its asks step through the lease's last milliseconds.
    while (atTheEnd < 3 && rounds < 200 && performance.now() - started < 20_000) {
      const key = `k${rounds++}`;
      const first = await store.acquire({
        key,
        fingerprint: 'fp',
        owner: owner(),
        leaseMs: 2,
        retentionMs: RETENTION,
      });
      if (first.kind !== 'acquired') throw new Error('expected the free key to be acquired');
      const end = first.leaseUntil;
      for (let ask = 0; ask < 500; ask++) {
        const next = await store.acquire({
          key,
          fingerprint: 'fp',
          owner: owner(),
          leaseMs: NEXT_LEASE,
          retentionMs: RETENTION,
        });
        // Redis's now when this acquire decided.
        const now = next.kind === 'found' ? next.now : next.leaseUntil - NEXT_LEASE;
        if (now === end) atTheEnd++;
        if (now < end) {
          expect(next, `now ${now}, lease until ${end}: still live`).toMatchObject({
            kind: 'found',
          });
          continue;
        }
        expect(next, `now ${now}, lease until ${end}: passed`).toMatchObject({
          kind: 'acquired',
          takeover: true,
          fence: 2,
        });
        break;
      }
    }
    // The check above must have met the boundary itself, not only the milliseconds around it.
    expect(atTheEnd, `rounds ${rounds}`).toBeGreaterThan(0);
  });
});
