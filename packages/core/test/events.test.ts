import { describe, expect, it } from 'vitest';
import {
  createIdempotency,
  deriveStorageKey,
  type IdemEvent,
  type IdempotencyOptions,
  ManualClock,
} from '../src/index.js';
import { FakeStore } from './support/fake-store.js';

const KEY = 'client-key-7f3a';
const SCOPE = ['tenant-1', 'POST /charges'];
const OPERATION = 'POST /charges';
const request = (fingerprint = 'f1') => ({
  key: KEY,
  scope: SCOPE,
  fingerprint,
  operation: OPERATION,
});

function setup(options: Partial<IdempotencyOptions> = {}) {
  const clock = new ManualClock();
  const store = new FakeStore(clock);
  const events: IdemEvent[] = [];
  const idem = createIdempotency<unknown>({
    store,
    clock,
    leaseMs: 1_000,
    heartbeatMs: false,
    storeTimeoutMs: 200,
    onEvent: (e) => events.push(e),
    ...options,
  });
  const of = <K extends IdemEvent['type']>(type: K) =>
    events.filter((e): e is Extract<IdemEvent, { type: K }> => e.type === type);
  return { clock, store, idem, events, of };
}

const storageKey = deriveStorageKey(SCOPE, KEY);

describe('events', () => {
  it('miss, completed, execution_end and hit carry the key hash, the operation, fence, sizes and durations', async () => {
    const { idem, events, of } = setup();
    await idem.execute(request(), async () => ({ charged: 1 }));
    await idem.execute(request(), async () => ({ charged: 2 }));
    expect(events.filter((e) => e.type !== 'store_call').map((e) => e.type)).toEqual([
      'miss',
      'completed',
      'execution_end',
      'hit',
    ]);
    for (const event of events) {
      expect(event.storageKey).toBe(storageKey);
      expect(event.operation).toBe(OPERATION);
      expect('durationMs' in event && event.durationMs >= 0).toBe(true);
    }
    // The raw client key never appears in an event.
    expect(JSON.stringify(events)).not.toContain(KEY);
    const [completed] = of('completed');
    const [hit] = of('hit');
    expect(completed).toMatchObject({ fence: 1 });
    expect(completed?.outcomeBytes).toBeGreaterThan(12);
    expect(hit).toMatchObject({ fence: 1, outcomeBytes: completed?.outcomeBytes });
    expect(hit?.decodeMs).toBeGreaterThanOrEqual(0);
    expect(of('miss')).toEqual([expect.objectContaining({ fence: 1, takeover: false })]);
    expect(of('execution_end')).toEqual([
      expect.objectContaining({ fence: 1, result: 'completed' }),
    ]);
  });

  it('store_call reports every store call by method, ok or not, with its time', async () => {
    const { idem, store, of } = setup({ storeTimeoutMs: 50 });
    await idem.execute(request(), async () => 1);
    store.next.acquire.push('throw');
    await expect(idem.execute({ ...request(), key: 'other' }, async () => 1)).rejects.toThrow();
    store.next.acquire.push('hang');
    await expect(idem.execute({ ...request(), key: 'third' }, async () => 1)).rejects.toThrow(
      'timed out',
    );
    await idem.drain(300);
    const calls = of('store_call').filter((e) => e.method !== 'release');
    expect(calls.map((e) => [e.method, e.ok])).toEqual([
      ['acquire', true],
      ['complete', true],
      ['acquire', false],
      ['acquire', false],
    ]);
    // A timed-out call counts its time limit.
    expect(calls[3]?.durationMs).toBeGreaterThanOrEqual(45);
    // The give-back of the failed acquires (owner-checked releases) is reported too.
    expect(of('store_call').some((e) => e.method === 'release')).toBe(true);
    expect(of('store_error').map((e) => e.method)).toEqual(['acquire', 'acquire']);
  });

  it('conflict, mismatch and takeover', async () => {
    const { idem, clock, of } = setup();
    const begun = await idem.begin(request());
    if (begun.kind !== 'acquired') throw new Error('expected an acquisition');
    await expect(idem.begin(request())).rejects.toMatchObject({ code: 'IN_PROGRESS' });
    await expect(idem.begin(request('f2'))).rejects.toMatchObject({ code: 'MISMATCH' });
    expect(of('conflict')).toEqual([
      expect.objectContaining({ fence: 1, retryAfterMs: 1_000, operation: OPERATION }),
    ]);
    expect(of('mismatch')).toHaveLength(1);
    clock.advance(1_001);
    const again = await idem.begin(request());
    expect(again.kind).toBe('acquired');
    expect(of('miss').at(-1)).toMatchObject({ fence: 2, takeover: true });
    // The first executor finds it lost the key: lease_lost then execution_end, once.
    await expect(begun.execution.complete({ meta: {}, body: new Uint8Array() })).rejects.toThrow();
    expect(of('lease_lost')).toEqual([expect.objectContaining({ fence: 1, phase: 'complete' })]);
    expect(of('execution_end')).toEqual([
      expect.objectContaining({ fence: 1, result: 'lease_lost' }),
    ]);
  });

  it('execution_end is told exactly once per acquisition, whatever the path', async () => {
    const { idem, store, of } = setup();
    // released (the operation failed)
    await expect(
      idem.execute({ ...request(), key: 'a' }, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    // abandoned (the release failed)
    store.next.release.push('throw');
    await expect(
      idem.execute({ ...request(), key: 'b' }, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    // completed
    await idem.execute({ ...request(), key: 'c' }, async () => 1);
    expect(of('miss')).toHaveLength(3);
    expect(of('execution_end').map((e) => e.result)).toEqual([
      'released',
      'abandoned',
      'completed',
    ]);
    expect(of('released')).toHaveLength(1);
  });

  it('a listener that throws or rejects breaks nothing', async () => {
    const { idem } = setup({
      onEvent: (event) => {
        if (event.type === 'miss') throw new Error('listener bug');
        if (event.type === 'store_call') return Promise.reject(new Error('async bug')) as never;
      },
    });
    expect(await idem.execute(request(), async () => 'v')).toEqual({ value: 'v', replayed: false });
  });
});
