import assert from 'node:assert/strict';
import type { AcquireResult, IdempotencyStore, OwnerWriteResult } from '@idem/core';
import {
  acquireInput,
  assertAcquired,
  assertFound,
  bytes,
  type ContractCheck,
  expectRecord,
  RETENTION_MS,
} from './checks-records.js';
import type { Harness } from './harness.js';

const notOwner = { ok: false, reason: 'not_owner' };

/** Instances the concurrency checks race on with the `sharedBackend` option. */
export const RACING_INSTANCES = 4;

/**
 * The stores a concurrency check races on: with `sharedBackend`, this store and 3 more
 * instances made alike, after checking that each one sees a record this one wrote (the option
 * says they share the records); with `sharedBackend: false`, this store alone. Left unset, the
 * suite finds out: another instance made alike that sees a record this one acquired shares
 * the records, and the check races across instances as with `true` (an adapter of a shared
 * service that forgot the option is not raced on one instance only); one that does not see it
 * lives apart (an in-process store), and the check races on this store alone.
 */
export async function racers(h: Harness): Promise<IdempotencyStore[]> {
  if (h.sharedBackend === false) return [h.store];
  // The record is acquired on another instance, so that a store living apart (found out
  // below) is raced with nothing added to it (a bounded store's capacity stays the check's).
  const first = await h.another('same');
  const key = h.newKey();
  const input = acquireInput(h, key);
  assertAcquired(await first.acquire(input));
  const stores = [h.store, first];
  for (let i = 2; i < RACING_INSTANCES; i++) stores.push(await h.another('same'));
  for (const [i, store] of stores.entries()) {
    if (store === first) continue;
    const seen = await store.get(key);
    if (h.sharedBackend === undefined && i === 0 && seen === undefined) return [h.store];
    assert.equal(
      seen?.owner,
      input.owner,
      h.sharedBackend
        ? `sharedBackend: instance ${i + 1}, made by createStore with the same context, must see the record another one acquired (got ${JSON.stringify(seen)})`
        : `instance ${i + 1}, made by createStore with the same context, must see the record another one acquired, as the first did: instances made alike share the records or none does (got ${JSON.stringify(seen)})`,
    );
  }
  return stores;
}

/** Lets the event loop turn `n` times (0: none), so that two racing calls interleave differently. */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Rounds of {@link takeoverRaceCheck} per owner write. */
const RACE_ROUNDS = 8;

/**
 * A takeover of a passed lease racing the stale owner's complete or release, on different
 * instances (with `sharedBackend`), each round in another order and spacing: the store applies
 * one before the other, so exactly one of them wins (contract 1 and 2, "atomic from any
 * process"). A store whose takeover reads the record and then writes it blindly lets both win:
 * the stale complete is lost under the new execution's record.
 */
const takeoverRaceCheck: ContractCheck = {
  group: 'lease',
  name: "a takeover racing the stale owner's complete or release: exactly one of them wins (8 rounds each; across instances with sharedBackend)",
  async run(h) {
    const stores = await racers(h);
    const on = (i: number) => stores[i % stores.length]!;
    // A bounded store shared by its instances already holds the record `racers` acquired: the
    // rounds' live records and it fit the declared capacity (todayrev).
    const perWrite =
      h.capacity === undefined
        ? RACE_ROUNDS
        : Math.max(1, Math.min(RACE_ROUNDS, Math.floor((h.capacity - 1) / 2)));
    const rounds = (['complete', 'release'] as const).flatMap((write) =>
      Array.from({ length: perWrite }, (_, round) => ({ write, round, key: h.newKey() })),
    );
    const stale = new Map<string, string>();
    for (const { key } of rounds) {
      const input = acquireInput(h, key);
      assertAcquired(await h.store.acquire(input));
      stale.set(key, input.owner);
    }
    await h.time.advance(h.time.leaseMs + h.time.toleranceMs + 10);
    await Promise.all(
      rounds.map(async ({ write, round, key }) => {
        const what = `${write} racing a takeover, round ${round + 1}`;
        const owner = stale.get(key)!;
        const fresh = acquireInput(h, key);
        const outcome = bytes(`stale ${what}`);
        const acquire = async () => {
          await turns(round % 2 === 0 ? 0 : round % 4);
          return on(round).acquire(fresh);
        };
        const stored = async (): Promise<OwnerWriteResult> => {
          await turns(round % 2 === 1 ? 0 : round % 4);
          const w = { key, owner, retentionMs: RETENTION_MS };
          return write === 'complete'
            ? on(round + 1).complete({ ...w, outcome })
            : on(round + 1).release(w);
        };
        const [taken, wrote]: [AcquireResult, OwnerWriteResult] = await Promise.all([
          acquire(),
          stored(),
        ]);
        if (write === 'complete') {
          assert.notEqual(
            taken.kind === 'acquired',
            wrote.ok,
            `${what}: exactly one wins (acquire ${JSON.stringify(taken)}, complete ${JSON.stringify(wrote)})`,
          );
          if (wrote.ok) {
            assert.equal(assertFound(taken).record.status, 'completed', `${what}: replayed`);
            await expectRecord(h, key, { status: 'completed', owner, fence: 1, outcome });
          } else {
            assert.deepEqual(wrote, notOwner, what);
            await expectRecord(h, key, { status: 'in_progress', owner: fresh.owner, fence: 2 });
          }
        } else {
          // A release first leaves a tombstone the acquisition then takes (no takeover).
          const acquired = assertAcquired(taken, `${what}: the key is acquired either way`);
          assert.equal(
            acquired.takeover,
            !wrote.ok,
            `${what}: a takeover (the lease passed) when the release lost, an acquisition of the tombstone when it won (release ${JSON.stringify(wrote)}, acquire ${JSON.stringify(taken)})`,
          );
          await expectRecord(h, key, { status: 'in_progress', owner: fresh.owner, fence: 2 });
        }
      }),
    );
  },
};

/**
 * Records of one store never meet another's: stores made with other prefixes (the adapter's
 * key prefix, as two applications sharing one service use), and keys of one store that differ
 * in a single character, first or last (a store that cuts or hashes keys to fewer characters
 * than the contract's 64 lets them meet).
 */
const prefixIsolationCheck: ContractCheck = {
  group: 'isolation',
  name: 'stores made with different prefixes never meet, and neither do keys that differ only in their first or last character',
  async run(h) {
    const other = await h.another('fresh');
    const key = h.newKey();
    const mine = acquireInput(h, key);
    const theirs = acquireInput(h, key);
    assert.equal(assertAcquired(await h.store.acquire(mine)).fence, 1);
    assert.equal(
      assertAcquired(
        await other.acquire(theirs),
        'a store with another prefix must not find the record of this one',
      ).fence,
      1,
    );
    const w = { key, retentionMs: RETENTION_MS };
    assert.deepEqual(
      await other.complete({ ...w, owner: mine.owner, outcome: bytes('x') }),
      notOwner,
      "this store's owner is nobody in the other",
    );
    assert.deepEqual(await h.store.complete({ ...w, owner: mine.owner, outcome: bytes('mine') }), {
      ok: true,
    });
    assert.deepEqual(await other.release({ ...w, owner: theirs.owner }), { ok: true });
    await expectRecord(h, key, {
      status: 'completed',
      owner: mine.owner,
      fence: 1,
      outcome: bytes('mine'),
    });
    const theirsNow = await other.get(key);
    assert.equal(theirsNow?.status, 'released', "the other store's record is its own");
    assert.equal(theirsNow?.owner, theirs.owner);
    // Keys of one store a single character apart.
    const flip = (c: string) => (c === '0' ? '1' : '0');
    const near = [`${flip(key[0]!)}${key.slice(1)}`, `${key.slice(0, -1)}${flip(key.at(-1)!)}`];
    for (const k of near) {
      const input = acquireInput(h, k);
      const taken = assertAcquired(
        await h.store.acquire(input),
        `key ${k} is not key ${key}: it must be free`,
      );
      assert.equal(taken.origin, input.owner, `key ${k} begins its own request`);
      await expectRecord(h, k, { status: 'in_progress', owner: input.owner, fence: taken.fence });
    }
    await expectRecord(h, key, {
      status: 'completed',
      owner: mine.owner,
      fence: 1,
      outcome: bytes('mine'),
    });
  },
};

/** How far {@link processClockStepped} steps the process's clock: beyond every deadline used. */
export const PROCESS_CLOCK_STEP_MS = 2 * RETENTION_MS;

/**
 * Runs `fn` with the process's wall clock (`Date.now()`, `new Date()`) stepped by `stepMs`,
 * as another application server's clock may be, then puts it back. Only the wall clock:
 * timers and `performance.now()` go on as they were.
 */
async function processClockStepped<T>(stepMs: number, fn: () => Promise<T>): Promise<T> {
  const RealDate = globalThis.Date;
  const now = () => RealDate.now() + stepMs;
  class SteppedDate extends RealDate {
    constructor(...args: unknown[]) {
      if (args.length === 0) super(now());
      else super(...(args as [string | number | Date]));
    }
    static override now(): number {
      return now();
    }
  }
  globalThis.Date = SteppedDate as DateConstructor;
  try {
    return await fn();
  } finally {
    globalThis.Date = RealDate;
  }
}

/**
 * A store decides every deadline by its service's clock (`clock: 'server'`) or by `ctx.clock`
 * (`'injectable'`), never by the wall clock of the process that calls it: the application
 * servers of one store disagree by seconds or more, and a store judging a lease by a caller's
 * clock hands a live lease to a caller whose clock runs ahead (two executions), or keeps a
 * passed one from a caller whose clock runs behind. With a server clock no other check can
 * tell the two apart: the suite's process is the only caller, its clock the service's.
 */
const processClockCheck: ContractCheck = {
  group: 'capabilities',
  name: "the calling process's wall clock stepped 2 h ahead or behind changes no deadline or decision (the store decides by its service's clock or ctx.clock)",
  async run(h: Harness) {
    const tol = h.time.toleranceMs;
    // Read outside the stepped calls only: the suite's clock is the wall clock with 'server'.
    const storeNow = () => h.time.clock.now();
    const ahead = <T>(fn: () => Promise<T>) => processClockStepped(PROCESS_CLOCK_STEP_MS, fn);
    const behind = <T>(fn: () => Promise<T>) => processClockStepped(-PROCESS_CLOCK_STEP_MS, fn);
    const key = h.newKey();
    const first = acquireInput(h, key);
    const before = storeNow();
    const acquired = assertAcquired(await ahead(() => h.store.acquire(first)));
    const after = storeNow();
    assert.ok(
      acquired.leaseUntil >= before + first.leaseMs - tol &&
        acquired.leaseUntil <= after + first.leaseMs + tol,
      `leaseUntil (${acquired.leaseUntil}) is the store's now + leaseMs (about ${before + first.leaseMs}), whatever the caller's clock says (${before + PROCESS_CLOCK_STEP_MS})`,
    );
    const found = assertFound(
      await ahead(() => h.store.acquire(acquireInput(h, key))),
      'a caller whose clock runs ahead must find the live lease',
    );
    assert.ok(
      Math.abs(found.now - storeNow()) <= tol,
      `found.now (${found.now}) is the store's clock, not the caller's`,
    );
    await h.time.advance(h.time.leaseMs + tol + 10);
    const next = acquireInput(h, key);
    const taken = assertAcquired(
      await behind(() => h.store.acquire(next)),
      'a caller whose clock runs behind must take over the passed lease',
    );
    assert.equal(taken.fence, 2);
    assert.equal(taken.takeover, true);
    const outcome = bytes('done');
    assert.deepEqual(
      await behind(() =>
        h.store.complete({ key, owner: next.owner, outcome, retentionMs: RETENTION_MS }),
      ),
      { ok: true },
    );
    const replay = assertFound(
      await ahead(() => h.store.acquire(acquireInput(h, key))),
      'a caller whose clock runs past the retention must still find the completed record',
    );
    assert.equal(replay.record.status, 'completed');
    await ahead(() =>
      expectRecord(h, key, { status: 'completed', owner: next.owner, fence: 2, outcome }),
    );
  },
};

/**
 * What shows only between processes: other instances onto the same records, other prefixes
 * on the same service, and callers whose clocks disagree.
 */
export const processChecks: ContractCheck[] = [
  prefixIsolationCheck,
  takeoverRaceCheck,
  processClockCheck,
];
