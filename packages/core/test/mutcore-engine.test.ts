// Mutation audit of the state machine (mutcore): behaviour the README and DESIGN.md promise
// that no other test of this package pinned. Each case names the mutant it kills.
import { describe, expect, it } from 'vitest';
import {
  type AcquireResult,
  answersSynchronously,
  createIdempotency,
  decideOutcome,
  encodeOutcome,
  type IdempotencyStore,
  InProgressError,
  InvalidInputError,
  LeaseLostError,
  OutcomeNotRecordedError,
  StoreUnavailableError,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';
import { holdLoop } from './support/held-loop.js';

/** A store whose `acquire` answers `answer` (a record it "found"); the other calls do nothing. */
function answering(answer: (input: { owner: string }) => AcquireResult): IdempotencyStore {
  return {
    capabilities: { clock: 'injectable' },
    acquire: async (input) => answer(input),
    complete: async () => ({ ok: true }),
    release: async () => ({ ok: true }),
    extend: async () => ({ ok: true }),
    get: async () => undefined,
  };
}

describe('mutcore: the outcome policy', () => {
  // Mutant: the policy's answer read by its truthiness, a Promise included.
  it('an isFinal that answers a Promise after a failure: InvalidInputError, the key released, a retry runs again', async () => {
    const store = new FakeStore();
    // A plain function that returns a promise: not refused at creation (not an AsyncFunction).
    const idem = createIdempotency<string>({
      store,
      heartbeatMs: false,
      isFinal: (() => Promise.resolve(false)) as never,
    });
    let runs = 0;
    const error = await idem
      .execute({ key: 'k' }, async () => {
        runs++;
        throw new Error('declined');
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidInputError);
    // Released, as for a policy that throws: the retry runs (a Promise read as `true`
    // would have recorded the failure as final, replayed to every retry).
    await expect(
      idem.execute({ key: 'k' }, async () => {
        runs++;
        throw new Error('declined again');
      }),
    ).rejects.toBeInstanceOf(InvalidInputError);
    expect(runs).toBe(2);
  });

  // Mutant: `decideOutcome` ignored (the policy asked instead).
  it('decideOutcome(ctx, false) from the operation releases a success the policy would keep', async () => {
    const store = new FakeStore();
    let asked = 0;
    const idem = createIdempotency<string>({
      store,
      heartbeatMs: false,
      isFinal: () => {
        asked++;
        return true;
      },
    });
    let runs = 0;
    const run = () =>
      idem.execute({ key: 'k' }, async (ctx) => {
        runs++;
        decideOutcome(ctx, false);
        return `run ${runs}`;
      });
    expect(await run()).toEqual({ value: 'run 1', replayed: false });
    expect(await run()).toEqual({ value: 'run 2', replayed: false });
    expect(asked).toBe(0);
  });

  it('decideOutcome(ctx, true) records a failure the policy would release', async () => {
    const store = new FakeStore();
    const idem = createIdempotency<string>({ store, heartbeatMs: false });
    let runs = 0;
    const run = () =>
      idem.execute({ key: 'k' }, async (ctx) => {
        runs++;
        decideOutcome(ctx, true);
        throw new Error('declined');
      });
    await expect(run()).rejects.toThrow('declined');
    await expect(run()).rejects.toMatchObject({ code: 'REPLAYED_FAILURE' });
    expect(runs).toBe(1);
  });
});

describe('mutcore: what acquire answers', () => {
  // Mutant: retryAfterMs = leaseUntil - now, unclamped.
  it('IN_PROGRESS for a lease at its very deadline still says to retry after at least 1 ms', async () => {
    const idem = createIdempotency({
      store: answering(() => ({
        kind: 'found',
        now: 5_000,
        record: {
          status: 'in_progress',
          fingerprint: '',
          owner: 'other',
          fence: 1,
          leaseUntil: 5_000,
          expiresAt: 90_000,
        },
      })),
      heartbeatMs: false,
    });
    const error = await idem.begin({ key: 'k' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InProgressError);
    expect((error as InProgressError).retryAfterMs).toBeGreaterThanOrEqual(1);
  });

  // Mutant: a record that is neither in progress nor completed handled as in progress.
  it('a store that answers a released record as live is a STORE_UNAVAILABLE, not IN_PROGRESS', async () => {
    const idem = createIdempotency({
      store: answering(() => ({
        kind: 'found',
        now: 5_000,
        record: {
          status: 'released',
          fingerprint: '',
          owner: 'other',
          fence: 1,
          leaseUntil: 9_000,
          expiresAt: 90_000,
        },
      })),
      heartbeatMs: false,
    });
    const error = await idem.begin({ key: 'k' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toMatch(/released record as live/);
  });

  // Mutant: a completed record without an outcome read as one (an untyped TypeError).
  it('a store that answers a completed record without its outcome is STORE_UNAVAILABLE', async () => {
    const idem = createIdempotency({
      store: answering(() => ({
        kind: 'found',
        now: 5_000,
        record: {
          status: 'completed',
          fingerprint: '',
          owner: 'other',
          fence: 1,
          leaseUntil: 0,
          expiresAt: 90_000,
        },
      })),
      heartbeatMs: false,
    });
    for (const call of [
      () => idem.begin({ key: 'k' }),
      () => idem.execute({ key: 'k' }, async () => 1),
    ]) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(StoreUnavailableError);
      expect((error as Error).message).toMatch(/without an outcome/);
    }
  });

  // Mutant: the poll interval not cut to what is left of the wait.
  it('a bounded wait ends at its timeout, not at the next poll past it', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({
      store,
      heartbeatMs: false,
      leaseMs: 60_000,
      wait: { timeoutMs: 100, pollMs: 5_000 },
    });
    const held = await idem.begin({ key: 'k' });
    expect(held.kind).toBe('acquired');
    const started = performance.now();
    await expect(idem.begin({ key: 'k' })).rejects.toBeInstanceOf(InProgressError);
    // A bound, not a speed: with the poll uncut the wait lasts the whole 5 s poll.
    expect(performance.now() - started).toBeLessThan(2_500);
    if (held.kind === 'acquired') await held.execution.release();
  });
});

describe('mutcore: a recorded not-recorded marker', () => {
  // Mutant: a marker's reason passed on as it is stored, whatever it says.
  it('answers OUTCOME_NOT_RECORDED with one of the three reasons, whatever the stored one says', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, heartbeatMs: false });
    await idem.execute({ key: 'k' }, async () => 'v');
    const record = [...store.records.values()][0];
    if (!record) throw new Error('expected a record');
    record.outcome = encodeOutcome({
      meta: { kind: 'not_recorded', reason: 'from a newer version', size: -1 },
      body: new Uint8Array(),
    });
    for (const call of [
      () => idem.execute({ key: 'k' }, async () => 'again'),
      () => idem.begin({ key: 'k' }),
    ]) {
      const error = await call().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OutcomeNotRecordedError);
      expect(['too_large', 'not_serializable', 'store_full']).toContain(
        (error as OutcomeNotRecordedError).reason,
      );
      // A size that is not a count is left out.
      expect((error as OutcomeNotRecordedError).size).toBeUndefined();
    }
  });
});

describe('mutcore: a custom serializer', () => {
  // Mutant: the replay hands `deserialize` the engine's wrapper metadata, not the serializer's.
  it('gets back on replay exactly the metadata it gave', async () => {
    const store = new FakeStore();
    const seen: unknown[] = [];
    const idem = createIdempotency<string>({
      store,
      heartbeatMs: false,
      serializer: {
        serialize: (value) => ({
          meta: { contentType: 'text/plain', length: value.length },
          body: new TextEncoder().encode(value),
        }),
        deserialize: ({ meta, body }) => {
          seen.push(meta);
          return new TextDecoder().decode(body);
        },
      },
    });
    expect(await idem.execute({ key: 'k' }, async () => 'hello')).toEqual({
      value: 'hello',
      replayed: false,
    });
    expect(await idem.execute({ key: 'k' }, async () => 'other')).toEqual({
      value: 'hello',
      replayed: true,
    });
    expect(seen).toEqual([{ contentType: 'text/plain', length: 5 }]);
  });
});

describe('mutcore: an acquisition answered in the runway of its lease', () => {
  // Mutant: refused only past the whole lease (begin then hands out an acquisition whose
  // operation would start in the last tenth of the lease).
  it('begin refuses it with LEASE_LOST and gives the key back', async () => {
    const store = new FakeStore();
    // An in-process store that answers at once, but 940 ms into a 1 s lease (runway: 900 ms).
    store.acquire = answersSynchronously((input: Parameters<FakeStore['acquireSync']>[0]) => {
      holdLoop(940);
      return store.acquireSync(input);
    });
    const idem = createIdempotency({ store, leaseMs: 1_000, heartbeatMs: false });
    const error = await idem.begin({ key: 'k' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LeaseLostError);
    await idem.drain(2_000);
    expect([...store.records.values()][0]?.status).toBe('released');
  });
});

describe('mutcore: the request', () => {
  // FINDING (mutcore, low, fixed): a fingerprint that is not a string (a number from
  // JavaScript) was compared as it was with the record's, which a store may keep as text
  // ("5"): every retry then got MISMATCH. Now INVALID_INPUT before anything is acquired.
  it('a fingerprint that is not a string is INVALID_INPUT, and nothing runs or is acquired', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, heartbeatMs: false });
    let ran = false;
    for (const bad of [5, { digest: 'x' }]) {
      const request = { key: 'k', fingerprint: bad } as never;
      await expect(
        idem.execute(request, async () => {
          ran = true;
          return 1;
        }),
      ).rejects.toBeInstanceOf(InvalidInputError);
      await expect(idem.begin(request)).rejects.toBeInstanceOf(InvalidInputError);
    }
    expect(ran).toBe(false);
    expect(store.calls.acquire).toBe(0);
  });
});
