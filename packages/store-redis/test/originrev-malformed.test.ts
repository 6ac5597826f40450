/**
 * originrev (adversarial review of the origin guarantee): a format-2 record whose origin
 * section is malformed (its length runs past the value's end, or it is empty: no store writes
 * either) meets an acquisition. Reads, forced releases and deletes refused such a value
 * already (origin.test.ts); the acquire script took the origin section as it found it: a
 * takeover carried a cut or empty origin into a well-formed record (the damage laundered,
 * and core then failed the handler that read `originId`), and a redelivery renewed the lease
 * and the fence memory before it read the origin. Now every path refuses it with a typed
 * error (`StoreUnavailableError`, "malformed record") before anything is written.
 */
import { StoreUnavailableError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createRedisStore, type RedisStore } from '../src/index.js';
import { owner, targetSession } from './mutaudit-helpers.js';
import { skipTarget, targets } from './targets.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

for (const target of targets) {
  describe.skipIf(skipTarget(target))(
    `originrev: a malformed origin section on ${target.name}`,
    () => {
      const session = targetSession(target);

      /**
       * A format-2 record of `taker` (who took over `first`'s passed lease), its lease `leaseMs`,
       * with its origin length field set to `length`; returns the store and the broken bytes.
       */
      async function broken(taker: string, leaseMs: number, length: number) {
        const store = createRedisStore({ client: session.client, keyPrefix: session.prefix() });
        const input = (who: string, lease: number) => ({
          key: 'k',
          fingerprint: 'fp',
          owner: who,
          leaseMs: lease,
          retentionMs: 60_000,
        });
        await store.acquire(input(owner(), 50));
        await sleep(80);
        expect(await store.acquire(input(taker, leaseMs))).toMatchObject({ takeover: true });
        const key = store.redisKey('k');
        const bytes = await session.raw.getBuffer(key);
        if (bytes?.[0] !== 2 || !bytes) throw new Error('no format-2 record');
        const at = 42 + bytes.readUInt32BE(34) + bytes.readUInt32BE(38);
        const value = Buffer.from(bytes);
        value.writeUInt32BE(length, at);
        await session.raw.set(key, value, 'PX', 60_000);
        const fence = await session.raw.get(store.fenceKey('k'));
        const fenceTtl = await session.raw.pttl(store.fenceKey('k'));
        return { store, key, value, input, fence, fenceTtl };
      }

      async function refusedUnchanged(
        store: RedisStore,
        key: string,
        value: Buffer,
        call: Promise<unknown>,
        fenceBefore: string | null,
      ) {
        const error = await call.then(
          (answer) => answer,
          (e: unknown) => e,
        );
        expect(error, `answered ${JSON.stringify(error)}`).toBeInstanceOf(StoreUnavailableError);
        expect(String((error as Error).cause ?? (error as Error).message)).toMatch(/malformed/);
        expect((await session.raw.getBuffer(key))?.equals(value)).toBe(true);
        expect(await session.raw.get(store.fenceKey('k'))).toBe(fenceBefore);
      }

      for (const [what, length] of [
        ['runs past the value', 0xffff],
        ['is empty', 0],
      ] as const) {
        it(`an origin section that ${what}: a takeover is refused, nothing written`, async () => {
          const taker = owner();
          const { store, key, value, input, fence } = await broken(taker, 50, length);
          await sleep(80); // the taker's lease passed too
          await refusedUnchanged(store, key, value, store.acquire(input(owner(), 30_000)), fence);
        });

        it(`an origin section that ${what}: the owner's redelivered acquire is refused, nothing written (not the lease, not the fence memory)`, async () => {
          const taker = owner();
          const { store, key, value, input, fence, fenceTtl } = await broken(taker, 30_000, length);
          await refusedUnchanged(store, key, value, store.acquire(input(taker, 30_000)), fence);
          // The fence memory's deadline did not move either (PTTL only counts down).
          expect(await session.raw.pttl(store.fenceKey('k'))).toBeLessThanOrEqual(fenceTtl);
        });

        it(`an origin section that ${what}: get() and a found answer refuse it`, async () => {
          const { store, key, value, input } = await broken(owner(), 30_000, length);
          await expect(store.get('k')).rejects.toBeInstanceOf(StoreUnavailableError);
          // A live lease of another owner: the found record is decoded and refused.
          await expect(store.acquire(input(owner(), 30_000))).rejects.toBeInstanceOf(
            StoreUnavailableError,
          );
          expect((await session.raw.getBuffer(key))?.equals(value)).toBe(true);
        });
      }
    },
  );
}
