/**
 * A store near its budget refuses new keys (StoreFullError at acquire, before the operation
 * runs) rather than taking keys whose outcomes then do not fit (StoreFullError at complete:
 * the operation ran and its outcome is lost, a marker is recorded instead). Found by the
 * chaos suite's memory-1mib row under load: many requests in flight, each holding only the
 * marker's reserve, and 173 of 300 answers of 1 MiB refused at completion.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { headroomStore, LEASE_MS, took } from './support/headroom-store.js';

const MiB = 1024 * 1024;
const runs = Number(process.env.IDEM_PROPERTY_RUNS ?? 100);

describe('room kept for the outcomes of the records in progress', () => {
  it('many keys in flight: the store refuses the ones whose outcomes would not fit, and every outcome of those it took fits', async () => {
    const { store, acquire, complete } = headroomStore(16 * MiB);
    const outcome = new Uint8Array(MiB).fill(3);
    // One outcome seen: the store now expects outcomes of about 1 MiB.
    await acquire('first');
    expect(await complete('first', outcome)).toEqual({ ok: true });
    const inFlight: string[] = [];
    let refused = 0;
    for (let i = 0; i < 40; i++) {
      if (await took(acquire, `k${i}`)) inFlight.push(`k${i}`);
      else refused++;
    }
    // 15 MiB left: about 14 more outcomes of 1 MiB beside their records, never 40.
    expect(inFlight.length).toBeGreaterThanOrEqual(13);
    expect(inFlight.length).toBeLessThanOrEqual(15);
    expect(refused).toBe(40 - inFlight.length);
    for (const key of inFlight) expect(await complete(key, outcome)).toEqual({ ok: true });
    expect(store.bytes).toBeLessThanOrEqual(16 * MiB);
    // A refused key left nothing behind.
    expect(await store.get(`k${39}`)).toBeUndefined();
  });

  it('small outcomes keep no room: as many leases fit as in a store that never saw an outcome', async () => {
    const count = async (warm: boolean) => {
      const { acquire, complete } = headroomStore(256 * 1024);
      if (warm) {
        for (let i = 0; i < 20; i++) {
          await acquire(`small-${i}`);
          expect(await complete(`small-${i}`, new Uint8Array(200))).toEqual({ ok: true });
        }
      }
      let n = 0;
      while (await took(acquire, `lease-${n}`)) n++;
      return n;
    };
    const cold = await count(false);
    const warm = await count(true);
    expect(cold).toBeGreaterThan(50);
    // Twenty small completed records take room of their own, nothing more.
    expect(warm).toBeGreaterThanOrEqual(cold - 20);
  });

  it('a takeover of a passed lease keeps the room it had: not counted twice', async () => {
    const { clock, acquire, complete } = headroomStore(4 * MiB);
    await acquire('warm');
    expect(await complete('warm', new Uint8Array(MiB))).toEqual({ ok: true });
    // Room for the outcomes of two more records beside 'warm', not three.
    expect(await took(acquire, 'a')).toBe(true);
    expect(await took(acquire, 'b')).toBe(true);
    expect(await took(acquire, 'c')).toBe(false);
    clock.advance(LEASE_MS);
    // 'a' passed its lease: a retry takes it over in its place.
    expect(await took(acquire, 'a')).toBe(true);
  });

  it('property: with outcomes of one size, no outcome of a key the store took is refused, whatever the interleaving', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 16 * 1024, max: 128 * 1024 }),
        fc.array(fc.tuple(fc.boolean(), fc.nat()), { minLength: 60, maxLength: 200 }),
        async (size, steps) => {
          const { store, acquire, complete } = headroomStore(MiB);
          const outcome = new Uint8Array(size);
          // The first outcome teaches the store the size.
          await acquire('seed');
          expect(await complete('seed', outcome)).toEqual({ ok: true });
          const open: string[] = [];
          let next = 0;
          for (const [start, pick] of steps) {
            if (start || open.length === 0) {
              const key = `k${next++}`;
              if (await took(acquire, key)) open.push(key);
            } else {
              const [key] = open.splice(pick % open.length, 1);
              const done = await complete(key as string, outcome).catch((e: unknown) => e);
              expect(done).toEqual({ ok: true });
            }
            expect(store.bytes).toBeLessThanOrEqual(MiB);
          }
        },
      ),
      // A failure is reported as found: shrinking hundreds of async steps takes minutes.
      { numRuns: runs, endOnFailure: true },
    );
  });
});
