/**
 * rev3 review of d171789: store-memory recognises "the default clock" by the identity of
 * `systemClock` from the copy of `@idem/core` it imports. Another copy of core in the same
 * process (the CommonJS build beside the ES module one, the dual-package hazard; or two
 * installed versions) has another `systemClock` object.
 */
import { createRequire } from 'node:module';
import { type Clock, createIdempotency, systemClock } from '@idem/core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMemoryStore } from '../src/index.js';

afterEach(() => {
  vi.restoreAllMocks();
});

const require = createRequire(import.meta.url);
const cjsCore = require('@idem/core') as { systemClock: Clock };

describe('rev3: systemClock from another copy of @idem/core', () => {
  it('held: the two copies are different objects (the premise)', () => {
    expect(cjsCore.systemClock).not.toBe(systemClock);
    expect(cjsCore.systemClock.now()).toBeGreaterThan(0);
  });

  // FIXED (was FINDING LOW; core marks systemClock with Symbol.for): `createMemoryStore({ clock: systemClock })` with the systemClock of another
  // copy of core (a CommonJS `require('@idem/core')` beside the ES module build, or two
  // versions installed) is taken for a custom clock: the store judges leases on the wall
  // clock while the engine (default clock) counts them on the monotonic one: the leaserev2
  // bug comes back: a forward step of the wall clock hands a live lease to a competitor while
  // the first execution's signal is not aborted, and both run. The README promises the
  // monotonic clock for `systemClock` "given or not". (A brand, e.g. Symbol.for, would
  // recognise every copy's systemClock.)
  it('a wall-clock step does not hand a live lease to a competitor', async () => {
    const orig = Date.now.bind(Date);
    let offset = 0;
    vi.spyOn(Date, 'now').mockImplementation(() => orig() + offset);
    const store = createMemoryStore({ clock: cjsCore.systemClock, sweepIntervalMs: 0 });
    const engine = createIdempotency<string>({ store, leaseMs: 2_000, heartbeatMs: false });
    const request = { key: 'k', scope: { principal: 'p' } };
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let firstSignal: AbortSignal | undefined;
    const running: string[] = [];
    const first = engine.execute(request, async (ctx) => {
      firstSignal = ctx.signal;
      running.push('first');
      await gate;
      return 'first';
    });
    await vi.waitFor(() => expect(running).toEqual(['first']));
    offset += 10_000; // NTP (or an operator) steps the wall clock 10 s forward
    const second = await engine
      .execute(request, async () => {
        running.push('second');
        return 'second';
      })
      .catch((e: unknown) => e);
    const firstAborted = firstSignal?.aborted;
    release();
    await first.catch(() => {});
    await engine.drain(1_000);
    await store.close?.();
    // The first execution's lease (2 s) is live (a few ms have elapsed): no competitor runs.
    expect(firstAborted).toBe(false);
    expect(running).toEqual(['first']);
    expect(second).toMatchObject({ code: 'IN_PROGRESS' });
  });

  // FIXED (was FINDING LOW; IdemError instanceof recognises another copy): core recognised a
  // store's typed errors by `instanceof IdemError` of its own copy (toStoreError, and
  // `instanceof StoreUnavailableError` in the give-back and the final write's retries). A
  // store built on another copy (here the CommonJS build, required) that refuses an acquire
  // with its StoreFullError has it rewrapped as STORE_UNAVAILABLE: @idem/http answers the
  // store-unavailable problem instead of store-full, the engine sends a give-back for an
  // acquire that was never applied; at `complete`, a StoreFullError/OutcomeTooLargeError of
  // the other copy is retried as an outage until maxHoldMs instead of writing the
  // not-recorded marker. (Duck-typing on `code`, or a Symbol.for brand, would cover copies.)
  it('a full store built on the other copy of core is STORE_FULL for the engine', async () => {
    const cjsMemory = require('@idem/store-memory') as {
      createMemoryStore: typeof createMemoryStore;
    };
    const store = cjsMemory.createMemoryStore({ maxEntries: 1, sweepIntervalMs: 0 });
    const engine = createIdempotency<string>({ store, heartbeatMs: false });
    let release!: () => void;
    const held = engine.execute(
      { key: 'held', scope: { principal: 'p' } },
      () =>
        new Promise<string>((resolve) => {
          release = () => resolve('held');
        }),
    );
    await vi.waitFor(() => expect(release).toBeTypeOf('function'));
    const error = await engine
      .execute({ key: 'other', scope: { principal: 'p' } }, async () => 'other')
      .catch((e: unknown) => e);
    release();
    await held;
    await engine.drain(1_000);
    await store.close?.();
    expect(error).toMatchObject({ code: 'STORE_FULL' });
  });
});
