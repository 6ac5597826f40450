import { describe, expect, it } from 'vitest';
import {
  answersSynchronously,
  beginAtOnce,
  createIdempotency,
  type Execution,
  type Idempotency,
  type IdempotencyOptions,
  InvalidInputError,
  InvalidKeyError,
  OutcomeNotRecordedError,
  OutcomeTooLargeError,
  type OwnerWriteResult,
  StoreUnavailableError,
} from '../src/index.js';
import { encodeOutcomeWith, giveBackReused, isReusedBuffer } from '../src/outcome-codec.js';
import { FakeStore } from './support/fake-store.js';

// Review of wt/perf35b (merged as 51ae77dd): `complete` now goes through `completeNow` and the
// encoded-bytes path; `beginAtOnce` hands the begin result without a promise. Each attack
// checks that what used to be a rejected promise still is one (never a synchronous throw),
// and that reused encoding buffers never leak into a record.

type SyncComplete = (input: Parameters<FakeStore['complete']>[0]) => unknown;

/** A store whose `complete` answers at once through `sync` (copying its input). */
function syncStore(sync: (store: FakeStore, inner: SyncComplete) => SyncComplete) {
  const store = new FakeStore();
  const records = new Map<string, Uint8Array>();
  const original = store.complete.bind(store);
  const inner: SyncComplete = (input) => {
    const copy = new Uint8Array(input.outcome);
    records.set(input.key, copy);
    void original({ ...input, outcome: copy });
    return { ok: true } as const;
  };
  store.complete = answersSynchronously(
    sync(store, inner) as (input: Parameters<FakeStore['complete']>[0]) => OwnerWriteResult,
    { copiesInput: true },
  );
  return { store, records };
}

async function acquired(
  options: Partial<IdempotencyOptions> & { store: FakeStore },
  key = 'k',
): Promise<{ idem: Idempotency<unknown>; execution: Execution }> {
  const idem = createIdempotency<unknown>({
    heartbeatMs: false,
    leaseMs: 1_000,
    storeTimeoutMs: 200,
    completionWaitMs: 50,
    maxHoldMs: 300,
    ...options,
  });
  const begun = await idem.begin({ key });
  if (begun.kind !== 'acquired') throw new Error('expected acquired');
  return { idem, execution: begun.execution };
}

const outcome = (n = 4, fill = 1) => ({
  meta: { status: 200 },
  body: new Uint8Array(n).fill(fill),
});

/** Calls `f` and asserts it did not throw synchronously; returns its answer. */
function noSyncThrow<T>(f: () => T): T {
  let answer: T | undefined;
  let thrown: unknown;
  try {
    answer = f();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeUndefined();
  return answer as T;
}

describe('rev35p review: complete/completeNow errors stay rejections', () => {
  it('a sync complete that throws an Error: complete and completeNow reject, never throw', async () => {
    const { store } = syncStore(() => () => {
      throw new Error('boom');
    });
    const a = await acquired({ store }, 'a');
    const p = noSyncThrow(() => a.execution.complete(outcome()));
    await expect(p).rejects.toBeInstanceOf(StoreUnavailableError);
    const b = await acquired({ store }, 'b');
    const q = noSyncThrow(() => b.execution.completeNow(outcome()));
    expect(q).toBeInstanceOf(Promise);
    await expect(q).rejects.toBeInstanceOf(StoreUnavailableError);
    await a.idem.drain(1_000);
    await b.idem.drain(1_000);
  });

  it('a sync complete that throws a non-Error (a string, undefined): rejects, never throws', async () => {
    for (const thrown of ['nope', undefined, 42]) {
      const { store } = syncStore(() => () => {
        throw thrown;
      });
      const a = await acquired({ store });
      const p = noSyncThrow(() => a.execution.completeNow(outcome()));
      expect(p).toBeInstanceOf(Promise);
      await expect(p).rejects.toBeInstanceOf(StoreUnavailableError);
      await a.idem.drain(1_000);
    }
  });

  it('a sync complete that answers a rejected promise or a foreign thenable: a promise, no sync throw', async () => {
    const rejecting = syncStore(() => () => Promise.reject(new Error('later')));
    const r = await acquired({ store: rejecting.store });
    const p = noSyncThrow(() => r.execution.completeNow(outcome()));
    expect(p).toBeInstanceOf(Promise);
    await expect(p).rejects.toBeInstanceOf(StoreUnavailableError);
    await r.idem.drain(1_000);

    // A thenable that is not a Promise, resolving ok: recorded (through the promise path).
    const thenable = syncStore((_store, inner) => (input) => {
      const answer = inner(input);
      // biome-ignore lint/suspicious/noThenProperty: a foreign thenable on purpose
      return { then: (resolve: (v: unknown) => void) => resolve(answer) };
    });
    const t = await acquired({ store: thenable.store });
    const q = noSyncThrow(() => t.execution.completeNow(outcome(4, 7)));
    expect(q).toBeInstanceOf(Promise);
    await expect(q).resolves.toBeUndefined();
    expect(thenable.records.get(t.execution.storageKey)?.at(-1)).toBe(7);
  });

  it('an outcome over maxOutcomeBytes, an unencodable outcome, a second complete: rejections', async () => {
    const { store } = syncStore((_s, inner) => inner);
    const big = await acquired({ store, maxOutcomeBytes: 64 }, 'big');
    const p = noSyncThrow(() => big.execution.completeNow(outcome(500)));
    await expect(p).rejects.toBeInstanceOf(OutcomeTooLargeError);

    const bad = await acquired({ store }, 'bad');
    const q = noSyncThrow(() =>
      bad.execution.completeNow({ meta: { n: 1n } as never, body: new Uint8Array(1) }),
    );
    await expect(q).rejects.toBeInstanceOf(OutcomeNotRecordedError);

    const twice = await acquired({ store }, 'twice');
    expect(twice.execution.completeNow(outcome())).toBeUndefined();
    const again = noSyncThrow(() => twice.execution.completeNow(outcome()));
    await expect(again).rejects.toBeInstanceOf(InvalidInputError);
    const again2 = noSyncThrow(() => twice.execution.complete(outcome()));
    await expect(again2).rejects.toBeInstanceOf(InvalidInputError);
    // The buffer was given back on each path: the next reusable encoding gets it.
    const next = encodeOutcomeWith(outcome(), true);
    const reused = isReusedBuffer(next);
    giveBackReused(next);
    expect(reused).toBe(true);
  });

  it('an outcomeCodec whose seal throws, or answers a non-Uint8Array: not_serializable rejection', async () => {
    const { store } = syncStore((_s, inner) => inner);
    let n = 0;
    for (const seal of [
      () => {
        throw 'not an error';
      },
      async () => 'text',
    ]) {
      const c = await acquired(
        {
          store,
          outcomeCodec: { seal: seal as never, open: async (b: Uint8Array) => b },
        },
        `codec-${n++}`,
      );
      const p = noSyncThrow(() => c.execution.completeNow(outcome()));
      expect(p).toBeInstanceOf(Promise);
      await expect(p).rejects.toBeInstanceOf(OutcomeNotRecordedError);
    }
  });
});

describe('rev35p review: stores that answer sometimes at once, sometimes later', () => {
  it('alternating sync/async answers: every outcome is recorded whole, in its own key', async () => {
    let call = 0;
    const { store, records } = syncStore((_s, inner) => (input) => {
      call++;
      if (call % 2 === 0) return inner(input);
      // Copy now (the bytes may be the reused buffer), answer later.
      const copy = { ...input, outcome: new Uint8Array(input.outcome) };
      return new Promise((resolve) => setTimeout(() => resolve(inner(copy)), 1));
    });
    const idem = createIdempotency<unknown>({ store, heartbeatMs: false, leaseMs: 2_000 });
    const executions: Execution[] = [];
    for (let i = 0; i < 8; i++) {
      const begun = await idem.begin({ key: `alt-${i}` });
      if (begun.kind !== 'acquired') throw new Error('expected acquired');
      executions.push(begun.execution);
    }
    // Interleaved: large and small outcomes, each a distinct fill.
    const writes = executions.map((e, i) => e.complete(outcome(i % 2 ? 70_000 : 3, i + 1)));
    await Promise.all(writes);
    executions.forEach((e, i) => {
      const bytes = records.get(e.storageKey);
      expect(bytes?.length).toBeGreaterThan(i % 2 ? 70_000 : 3);
      expect(bytes?.at(-1)).toBe(i + 1);
      expect(bytes?.at(-3)).toBe(i + 1);
    });
    // Replays read the same bytes back.
    for (let i = 0; i < 8; i++) {
      const begun = await idem.begin({ key: `alt-${i}` });
      expect(begun.kind).toBe('replay');
      if (begun.kind === 'replay') expect(begun.outcome.body.at(-1)).toBe(i + 1);
    }
  });

  it("a complete started from inside another execution's store call does not share its buffer", async () => {
    let nested: Execution | undefined;
    let nestedWrite: Promise<void> | undefined;
    const { store, records } = syncStore((_s, inner) => (input) => {
      if (nested) {
        const e = nested;
        nested = undefined;
        // While the outer bytes are still being read by the store.
        nestedWrite = e.complete(outcome(10, 9));
      }
      return inner(input);
    });
    const idem = createIdempotency<unknown>({ store, heartbeatMs: false });
    const a = await idem.begin({ key: 'outer' });
    const b = await idem.begin({ key: 'inner' });
    if (a.kind !== 'acquired' || b.kind !== 'acquired') throw new Error('expected acquired');
    nested = b.execution;
    await a.execution.complete(outcome(20, 5));
    await nestedWrite;
    expect(records.get(a.execution.storageKey)?.at(-1)).toBe(5);
    expect(records.get(a.execution.storageKey)?.includes(9)).toBe(false);
    expect(records.get(b.execution.storageKey)?.at(-1)).toBe(9);
    const next = encodeOutcomeWith(outcome(), true);
    const reused = isReusedBuffer(next);
    giveBackReused(next);
    expect(reused).toBe(true);
  });
});

describe('rev35p review: beginAtOnce', () => {
  it('a wrapped engine (a spread with its own begin) is called through its begin', async () => {
    const store = new FakeStore();
    const engine = createIdempotency<unknown>({ store, heartbeatMs: false });
    let called = 0;
    const wrapped = {
      ...engine,
      begin: (...args: Parameters<typeof engine.begin>) => {
        called++;
        return engine.begin(...args);
      },
    };
    const answer = await beginAtOnce(wrapped, { key: 'w' });
    expect(called).toBe(1);
    expect(answer.kind).toBe('acquired');
    if (answer.kind === 'acquired') await answer.execution.release();
  });

  it('a begin that fails synchronously (bad input): beginAtOnce throws it, engine.begin rejects', async () => {
    const store = new FakeStore();
    const engine = createIdempotency<unknown>({ store, heartbeatMs: false });
    const bad = { key: 42 } as never;
    expect(() => beginAtOnce(engine, bad)).toThrow(InvalidKeyError);
    const p = noSyncThrow(() => engine.begin(bad));
    await expect(p).rejects.toBeInstanceOf(InvalidKeyError);
  });

  // FINDING (LOW, fixed): an engine whose `begin` was replaced in place (instrumentation that
  // patches `engine.begin = traced(engine.begin)`) was bypassed by beginAtOnce: its entry was
  // keyed by the engine object, not by the `begin` it has now. Internal API (@idem/http passes
  // only its own engine), so no user-visible effect today.
  it('an engine whose begin was replaced in place is called through its replacement', async () => {
    const store = new FakeStore();
    const engine = createIdempotency<unknown>({ store, heartbeatMs: false });
    let called = 0;
    const original = engine.begin;
    engine.begin = (...args) => {
      called++;
      return original(...args);
    };
    const answer = await beginAtOnce(engine, { key: 'patched' });
    if (answer.kind === 'acquired') await answer.execution.release();
    expect(called).toBe(1);
  });
});
