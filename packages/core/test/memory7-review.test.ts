import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Execution } from '../src/execution.js';
import { FixedDelayTimers, type TimedEntry } from '../src/fixed-delay-timers.js';
import {
  type AcquireInput,
  answersSynchronously,
  type CompleteInput,
  createIdempotency,
  type ExtendInput,
  type IdemEvent,
  type IdempotencyStore,
  type OperationContext,
  type ReleaseInput,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

afterEach(() => {
  vi.useRealTimers();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The engine's shared heartbeat queue, reached through an execution (internal). */
function queueOf(execution: Execution): FixedDelayTimers {
  const queue = (execution as unknown as { lease: { heartbeats: FixedDelayTimers } }).lease
    .heartbeats;
  expect(queue).toBeInstanceOf(FixedDelayTimers);
  return queue;
}

const jsonOutcome = (text: string) => ({
  meta: { v: 1 },
  body: new TextEncoder().encode(text),
});

/** A store delegating to `inner`, each method optionally replaced. */
function wrap(inner: IdempotencyStore, over: Partial<IdempotencyStore>): IdempotencyStore {
  return {
    capabilities: inner.capabilities,
    acquire: (i: AcquireInput) => inner.acquire(i),
    complete: (i: CompleteInput) => inner.complete(i),
    release: (i: ReleaseInput) => inner.release(i),
    extend: (i: ExtendInput) => inner.extend(i),
    get: (k: string) => inner.get(k),
    ...over,
  } as IdempotencyStore;
}

describe('memory7 review: the shared heartbeat queue stays bounded', () => {
  it('10,000 short executions leave no entry queued, and the timer stops once it fires on an empty queue', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: 300, heartbeatMs: 30 });
    let queue: FixedDelayTimers | undefined;
    for (let i = 0; i < 10_000; i++) {
      const begun = await idem.begin({ key: `k${i}` });
      if (begun.kind !== 'acquired') throw new Error(begun.kind);
      queue ??= queueOf(begun.execution);
      expect(queueOf(begun.execution)).toBe(queue); // one queue for the engine
      if (i % 2 === 0) await begun.execution.complete(jsonOutcome(`v${i}`));
      else await begun.execution.release();
    }
    expect(queue?.size).toBe(0);
    await sleep(80);
    expect(queue?.size).toBe(0);
    expect(queue?.armed).toBe(false);
    expect(store.calls.extend).toBe(0);
  });

  it('the queue timer never keeps the process alive', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: 3_000, heartbeatMs: 1_000 });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error(begun.kind);
    const queue = queueOf(begun.execution);
    const timer = (queue as unknown as { timer: NodeJS.Timeout }).timer;
    expect(queue.armed).toBe(true);
    expect(timer.hasRef()).toBe(false);
    await begun.execution.release();
  });

  it('abandon and release take the entry out: no renewal after, the key never resurrected', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: 200, heartbeatMs: 20 });
    const a = await idem.begin({ key: 'a' });
    const b = await idem.begin({ key: 'b' });
    if (a.kind !== 'acquired' || b.kind !== 'acquired') throw new Error('not acquired');
    const queue = queueOf(a.execution);
    expect(queue.size).toBe(2);
    a.execution.abandon();
    await b.execution.release();
    expect(queue.size).toBe(0);
    await sleep(100);
    expect(store.calls.extend).toBe(0);
    const rb = await store.get(b.execution.storageKey);
    expect(rb?.status).toBe('released');
  });
});

describe('memory7 review: heartbeats around the end of an execution', () => {
  it('an execution that ends while its renewal is in flight: the late renewal changes nothing and no renewal follows', async () => {
    const store = new FakeStore();
    store.lateMs = 60;
    store.next.extend.push('late');
    const idem = createIdempotency({ store, leaseMs: 200, heartbeatMs: 20 });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error(begun.kind);
    await sleep(35); // the first renewal is on its way (applied after 60 ms)
    expect(store.calls.extend).toBe(1);
    await begun.execution.complete(jsonOutcome('done'));
    const completed = await store.get(begun.execution.storageKey);
    expect(completed?.status).toBe('completed');
    await sleep(120);
    expect(store.calls.extend).toBe(1);
    const after = await store.get(begun.execution.storageKey);
    expect(after).toEqual(completed);
    expect(queueOf(begun.execution).size).toBe(0);
  });

  it('a renewal that fails, then the execution ends: the retry timer is cleared too', async () => {
    const store = new FakeStore();
    store.always.extend = 'throw';
    const idem = createIdempotency({ store, leaseMs: 1_000, heartbeatMs: 20 });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error(begun.kind);
    await sleep(30);
    const calls = store.calls.extend;
    expect(calls).toBeGreaterThanOrEqual(1);
    await begun.execution.release();
    await sleep(80);
    expect(store.calls.extend).toBe(calls);
  });

  it('drain() returns promptly with heartbeats queued, and renewals go on for the running execution', async () => {
    const store = new FakeStore();
    const idem = createIdempotency({ store, leaseMs: 150, heartbeatMs: 30 });
    const begun = await idem.begin({ key: 'k' });
    if (begun.kind !== 'acquired') throw new Error(begun.kind);
    const t0 = performance.now();
    await idem.drain(1_000);
    expect(performance.now() - t0).toBeLessThan(500);
    await sleep(400); // well past the 150 ms lease: renewed all along
    expect(store.calls.extend).toBeGreaterThanOrEqual(5);
    expect(begun.execution.signal.aborted).toBe(false);
    await begun.execution.complete(jsonOutcome('ok'));
    expect((await store.get(begun.execution.storageKey))?.status).toBe('completed');
  });
});

describe('memory7 review: renewals of many executions share one timer without waiting on each other', () => {
  it('1,000 executions in flight, every renewal slow (30 ms) and one hanging, for more than two leases: only the hanging key loses its lease', async () => {
    const inner = new FakeStore();
    const hang = new Set<string>();
    const store = wrap(inner, {
      extend: async (i: ExtendInput) => {
        if (hang.has(i.key)) return new Promise(() => {});
        await sleep(30);
        return inner.extend(i);
      },
    });
    const events: IdemEvent[] = [];
    const idem = createIdempotency<number>({
      store,
      // Roomy: 1,000 acquisitions under vitest on a loaded machine take up to ~350 ms to
      // answer, and the lease estimate counts from when they were sent.
      leaseMs: 900,
      heartbeatMs: 150,
      storeTimeoutMs: 10_000,
      onEvent: (e) => {
        if (e.type === 'lease_lost') events.push(e);
      },
    });
    let hungKey: string | undefined;
    const aborted: string[] = [];
    const runs = Array.from({ length: 1_000 }, (_, i) =>
      idem.execute({ key: `k${i}` }, async (ctx: OperationContext) => {
        if (i === 0) {
          hungKey = ctx.storageKey;
          hang.add(ctx.storageKey);
        }
        await sleep(2_000);
        if (ctx.signal.aborted) aborted.push(ctx.storageKey);
        return i;
      }),
    );
    const results = await Promise.allSettled(runs);
    const lostKeys = new Set(events.map((e) => e.storageKey));
    expect([...lostKeys]).toEqual([hungKey]);
    expect(aborted).toEqual([hungKey]);
    for (const [i, r] of results.entries()) {
      if (i === 0) continue;
      expect(r).toEqual({ status: 'fulfilled', value: { value: i, replayed: false } });
    }
    // Every other execution's record was renewed in time and completed.
    const completed = [...inner.records.entries()].filter(([, r]) => r.status === 'completed');
    expect(completed.length).toBeGreaterThanOrEqual(999);
  }, 30_000);
});

describe('memory7 review: FixedDelayTimers edge cases', () => {
  /** An entry that records when it ran and may act on the queue. */
  function entry(name: string, log: string[], act?: () => void): TimedEntry {
    return {
      timerDue: 0,
      timerPrev: undefined,
      timerNext: undefined,
      timerQueued: false,
      onTimer() {
        log.push(name);
        act?.();
      },
    };
  }

  it('removing later entries and re-adding one from inside onTimer: each runs once, in order, the queue empties', () => {
    vi.useFakeTimers();
    let now = 0;
    const q = new FixedDelayTimers(100, () => now);
    const log: string[] = [];
    const c = entry('c', log);
    const b = entry('b', log);
    const a = entry('a', log, () => {
      q.remove(b);
      q.add(a); // re-queued from inside its own run: due 100 later
    });
    q.add(a);
    now = 10;
    q.add(b);
    now = 20;
    q.add(c);
    now = 100;
    vi.advanceTimersByTime(100);
    expect(log).toEqual(['a']);
    expect(q.size).toBe(2); // c, a
    now = 120;
    vi.advanceTimersByTime(20);
    expect(log).toEqual(['a', 'c']);
    now = 200;
    vi.advanceTimersByTime(80);
    expect(log).toEqual(['a', 'c', 'a']);
    expect(q.size).toBe(1);
    q.remove(a);
    now = 400;
    vi.advanceTimersByTime(200);
    expect(log).toEqual(['a', 'c', 'a']);
    expect(q.size).toBe(0);
    expect(q.armed).toBe(false);
  });

  it('close() from inside an entry: nothing else runs, nothing is armed', () => {
    vi.useFakeTimers();
    let now = 0;
    const q = new FixedDelayTimers(50, () => now);
    const log: string[] = [];
    const a = entry('a', log, () => q.close());
    q.add(a);
    q.add(entry('b', log));
    now = 50;
    vi.advanceTimersByTime(50);
    expect(log).toEqual(['a']);
    expect(q.size).toBe(0);
    expect(q.armed).toBe(false);
  });

  it('a clock that stands still (timers faked, performance not): entries still run, none before its delay of timer time', () => {
    vi.useFakeTimers();
    const q = new FixedDelayTimers(100, () => 5);
    const log: string[] = [];
    q.add(entry('a', log));
    vi.advanceTimersByTime(99);
    expect(log).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(log).toEqual(['a']);
  });
});

describe('memory7 review: FixedDelayTimers after a slow batch', () => {
  // Found in review (fixed: the clock is read again after each entry): fire() reads the clock once, before it runs the due entries. An entry that
  // becomes due while a batch runs (1,000 heartbeats started in one go, each doing some
  // synchronous work) is not run at the end of the batch: the timer is re-armed for its due
  // time counted from the stale reading, so it runs up to one batch's processing time later
  // than its own setTimeout would have (main's per-execution timers ran right after the
  // blocking work). Bounded and small against a lease of 3 heartbeats, hence LOW.
  // Repro: entries a (due 100) and b (due 105); a's onTimer takes 20 ms; b runs at 125, not 120.
  it('an entry due by the time a batch ends runs with that batch (not a timer later)', () => {
    vi.useFakeTimers();
    let now = 0;
    const q = new FixedDelayTimers(100, () => now);
    const log: string[] = [];
    const mk = (name: string, work: number): TimedEntry => ({
      timerDue: 0,
      timerPrev: undefined,
      timerNext: undefined,
      timerQueued: false,
      onTimer() {
        log.push(`${name}@${now}`);
        now += work; // synchronous work inside the batch
      },
    });
    q.add(mk('a', 20));
    now = 5;
    q.add(mk('b', 0));
    now = 100;
    vi.advanceTimersByTime(100);
    expect(log).toEqual(['a@100', 'b@120']);
  });
});

describe('memory7 review: the operation context as a class', () => {
  it('has the literal’s own enumerable members in order, spreads, and its signal aborts on a lost lease', async () => {
    const store = new FakeStore();
    store.always.extend = 'throw';
    const idem = createIdempotency<string>({ store, leaseMs: 100, heartbeatMs: 30 });
    let keys: string[] = [];
    let spread: Record<string, unknown> = {};
    let reason: unknown;
    const r = await idem.execute({ key: 'k' }, async (ctx) => {
      keys = Object.keys(ctx);
      spread = { ...ctx };
      const { signal, fence } = ctx;
      expect(fence).toBe(1);
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      reason = signal.reason;
      return 'x';
    });
    expect(keys).toEqual(['fence', 'signal', 'storageKey', 'originId']);
    expect(spread.signal).toBeInstanceOf(AbortSignal);
    expect(typeof spread.storageKey).toBe('string');
    expect(spread.originId).toMatch(/^[0-9a-f]{32}$/);
    expect((reason as Error).name).toBe('LeaseLostError');
    expect(r.value).toBe('x');
  });
});

/** A minimal in-process store whose methods answer at once; `complete` keeps the caller's array. */
function referenceKeepingStore(opts: { laterRead?: boolean; mutateInput?: boolean } = {}) {
  type Rec = {
    status: 'in_progress' | 'completed' | 'released';
    fingerprint: string;
    owner: string;
    fence: number;
    leaseUntil: number;
    expiresAt: number;
    outcome?: Uint8Array;
  };
  const records = new Map<string, Rec>();
  const kept = new Map<string, Uint8Array>();
  const notOwner = { ok: false, reason: 'not_owner' } as const;
  const owned = (key: string, owner: string) => {
    const r = records.get(key);
    return r?.status === 'in_progress' && r.owner === owner ? r : undefined;
  };
  const store = {
    capabilities: { clock: 'injectable' as const },
    acquire: answersSynchronously((i: AcquireInput) => {
      const now = Date.now();
      const f = records.get(i.key);
      if (f && (f.status === 'completed' || (f.status === 'in_progress' && now < f.leaseUntil)))
        return { kind: 'found' as const, record: { ...f }, now };
      const fence = (f?.fence ?? 0) + 1;
      const leaseUntil = now + i.leaseMs;
      records.set(i.key, {
        status: 'in_progress',
        fingerprint: i.fingerprint,
        owner: i.owner,
        fence,
        leaseUntil,
        expiresAt: leaseUntil + i.retentionMs,
      });
      return { kind: 'acquired' as const, fence, leaseUntil, takeover: false, origin: i.owner };
    }),
    complete: answersSynchronously((i: CompleteInput) => {
      const write = () => {
        const r = owned(i.key, i.owner);
        if (!r) return notOwner;
        r.status = 'completed';
        if (opts.mutateInput) {
          // Keeps a copy, then scribbles over the caller's array.
          r.outcome = i.outcome.slice();
          i.outcome.fill(0x21);
        } else r.outcome = i.outcome; // kept by reference, not copied
        kept.set(i.key, r.outcome);
        return { ok: true } as const;
      };
      if (opts.laterRead)
        return new Promise((resolve) => setTimeout(() => resolve(write()), 5)) as never;
      return write();
    }),
    release: answersSynchronously((i: ReleaseInput) => {
      const r = owned(i.key, i.owner);
      if (!r) return notOwner;
      r.status = 'released';
      return { ok: true } as const;
    }),
    extend: answersSynchronously((i: ExtendInput) => {
      const r = owned(i.key, i.owner);
      if (!r) return notOwner;
      r.leaseUntil = Date.now() + i.leaseMs;
      return { ok: true, leaseUntil: r.leaseUntil } as const;
    }),
    get: async (key: string) => records.get(key),
  };
  return { store: store as unknown as IdempotencyStore, kept };
}

describe('memory7 review: synchronous complete forms that keep or read the bytes later', () => {
  for (const opts of [{}, { laterRead: true }, { mutateInput: true }]) {
    it(`a store that keeps or changes the outcome array (${JSON.stringify(opts)}): every replay is its own value`, async () => {
      const { store } = referenceKeepingStore(opts);
      const idem = createIdempotency<unknown>({ store });
      const values = Array.from({ length: 30 }, (_, i) => ({
        i,
        s: String.fromCharCode(65 + i).repeat(100 + i),
      }));
      await Promise.all(values.map((v, i) => idem.execute({ key: `k${i}` }, async () => v)));
      for (const [i, v] of values.entries()) {
        await idem.execute({ key: `k${i}` }, async () => v);
        expect(await idem.execute({ key: `k${i}` }, async () => 'again')).toEqual({
          value: v,
          replayed: true,
        });
      }
    });
  }
});

describe('memory7 review: the operation context reached through a Proxy or as a prototype', () => {
  // Found in review (fixed: the execution is kept under a symbol, read through the receiver): the context's `signal` is now a shared accessor that reads a private field
  // (#execution): read through a Proxy of the context, or an object whose prototype is the
  // context, it throws TypeError ("Cannot read private member #execution"). Main's object
  // literal (a getter closing over the execution) answered the signal in both cases.
  // Repro: idem.execute({ key }, async (ctx) => new Proxy(ctx, {}).signal) -> TypeError.
  it('ctx.signal read through new Proxy(ctx, {}) answers the signal (main: yes)', async () => {
    const idem = createIdempotency<boolean>({ store: new FakeStore() });
    const r = await idem.execute(
      { key: 'proxy' },
      async (ctx) => new Proxy(ctx, {}).signal.aborted,
    );
    expect(r.value).toBe(false);
  });

  it('ctx.signal read through Object.create(ctx) answers the signal (main: yes)', async () => {
    const idem = createIdempotency<boolean>({ store: new FakeStore() });
    const r = await idem.execute(
      { key: 'proto' },
      async (ctx) => (Object.create(ctx) as OperationContext).signal.aborted,
    );
    expect(r.value).toBe(false);
  });
});
