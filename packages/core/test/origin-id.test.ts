import { describe, expect, it } from 'vitest';
import {
  type AcquireInput,
  createIdempotency,
  type IdempotencyStore,
  InvalidInputError,
  ManualClock,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const LEASE_MS = 1_000;
const RETENTION_MS = 5_000;

function setup() {
  const clock = new ManualClock(1_700_000_000_000);
  const store = new FakeStore(clock);
  const idem = createIdempotency<string>({
    store,
    clock,
    leaseMs: LEASE_MS,
    retentionMs: RETENTION_MS,
    heartbeatMs: false,
  });
  return { clock, store, idem };
}

describe('originId: one id per logical request', () => {
  it('is the same for a retry after a failure, differs between keys, and is 32 lowercase hex', async () => {
    const { idem } = setup();
    const ids: string[] = [];
    await expect(
      idem.execute({ key: 'a' }, async (ctx) => {
        ids.push(ctx.originId);
        throw new Error('transient');
      }),
    ).rejects.toThrow('transient');
    const done = await idem.execute({ key: 'a' }, async (ctx) => {
      ids.push(ctx.originId);
      return ctx.originId;
    });
    const other = await idem.execute({ key: 'b' }, async (ctx) => ctx.originId);
    expect(ids[0]).toMatch(/^[0-9a-f]{32}$/);
    expect(ids[1]).toBe(ids[0]);
    expect(done.value).toBe(ids[0]);
    expect(other.value).not.toBe(ids[0]);
    // A replay runs nothing: the recorded value is the first request's id.
    expect((await idem.execute({ key: 'a' }, async (ctx) => ctx.originId)).value).toBe(ids[0]);
  });

  it('is the same for a takeover after a crash (the lease passed), with a higher fence', async () => {
    const { clock, idem } = setup();
    const first = await idem.begin({ key: 'k' });
    if (first.kind !== 'acquired') throw new Error(first.kind);
    const crashed = first.execution;
    // The executor crashed: its lease passes, a retry takes over.
    clock.advance(LEASE_MS + 1);
    const second = await idem.begin({ key: 'k' });
    if (second.kind !== 'acquired') throw new Error(second.kind);
    expect(second.execution.takeover).toBe(true);
    expect(second.execution.fence).toBeGreaterThan(crashed.fence);
    expect(second.execution.originId).toBe(crashed.originId);
    crashed.abandon();
    second.execution.abandon();
  });

  it('is new once the key is used again after its retention passed (a new request under an old key)', async () => {
    const { clock, idem } = setup();
    const first = await idem.execute({ key: 'daily' }, async (ctx) => ctx.originId);
    clock.advance(RETENTION_MS + 1);
    const next = await idem.execute({ key: 'daily' }, async (ctx) => ctx.originId);
    expect(next.replayed).toBe(false);
    expect(next.value).toMatch(/^[0-9a-f]{32}$/);
    expect(next.value).not.toBe(first.value);
  });

  it('does not reveal the origin token: another digest of it for another storage key', async () => {
    const { store, idem } = setup();
    const seen: { originId: string; storageKey: string }[] = [];
    await idem.execute({ key: 'x' }, async (ctx) => {
      seen.push({ originId: ctx.originId, storageKey: ctx.storageKey });
      return '';
    });
    const record = store.records.get(seen[0]?.storageKey ?? '');
    expect(record?.origin).toBeTypeOf('string');
    expect(seen[0]?.originId).not.toContain(record?.origin ?? '-');
  });

  it('a store that answers no origin: the execution runs, and reading originId throws a typed error saying why', async () => {
    const inner = new FakeStore();
    const store: IdempotencyStore = {
      capabilities: inner.capabilities,
      acquire: async (input: AcquireInput) => {
        const result = await inner.acquire(input);
        if (result.kind !== 'acquired') return result;
        const { origin: _, ...without } = result;
        return without as typeof result;
      },
      complete: (i) => inner.complete(i),
      release: (i) => inner.release(i),
      extend: (i) => inner.extend(i),
      get: (k) => inner.get(k),
    };
    const idem = createIdempotency<string>({ store, heartbeatMs: false });
    let error: unknown;
    const done = await idem.execute({ key: 'k' }, async (ctx) => {
      try {
        void ctx.originId;
      } catch (e) {
        error = e;
      }
      return 'ran';
    });
    expect(done.value).toBe('ran');
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toMatch(/origin/);
  });
});
