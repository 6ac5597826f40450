import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, getIdempotencyInfo, runBatch } from '../src/index.js';
import type { Fault, SeenRequest } from './support/fault-server.js';
import { postJson, recordingSleep, startHarness } from './support/harness.js';

/** Small seeded PRNG (mulberry32) so a failing fault sequence can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FAULTS: Fault[] = [
  { kind: 'drop-after' },
  { kind: 'drop-before' },
  { kind: 'status', status: 500 },
  { kind: 'status', status: 503, headers: { 'retry-after': '0' } },
  { kind: 'status', status: 429, headers: { 'retry-after': '1' } },
];

/** Faults a third of the requests at random, at most three times per key. */
function randomFaults(seed: number): (request: SeenRequest) => Fault | undefined {
  const random = prng(seed);
  const perKey = new Map<string, number>();
  return (request) => {
    const count = perKey.get(request.key ?? '') ?? 0;
    if (count >= 3 || random() >= 0.33) return undefined;
    perKey.set(request.key ?? '', count + 1);
    return FAULTS[Math.floor(random() * FAULTS.length)];
  };
}

const SEED = 20_261_128;

interface ItemResult {
  item: number;
  charge: string;
  replayed: boolean;
}

function itemsOf(n: number, tag: string) {
  return Array.from({ length: n }, (_, i) => ({ item: i, tag }));
}

describe('runBatch against a loopback @idem server with faults', () => {
  it('runs a batch of 50 through random faults: each item executed once, results in order', async () => {
    const h = await startHarness(randomFaults(SEED));
    const idemFetch = createIdempotentFetch({ maxAttempts: 8, sleep: recordingSleep(2).sleep });
    const items = itemsOf(50, 'faults');
    const { results } = await runBatch(
      items,
      async (item, { key }): Promise<ItemResult> => {
        const response = await idemFetch(
          `${h.url}/charges`,
          postJson(item, { headers: { 'Idempotency-Key': key } }),
        );
        if (response.status !== 201) throw new Error(`status ${response.status}`);
        const body = (await response.json()) as { item: number; charge: string };
        return { ...body, replayed: getIdempotencyInfo(response)?.replayed ?? false };
      },
      { concurrency: 8 },
    );
    expect(results).toHaveLength(50);
    expect(results.map((r) => (r.ok ? r.value.item : r.error))).toEqual(items.map((i) => i.item));
    expect(results.map((r) => r.index)).toEqual(items.map((_, i) => i));
    for (let i = 0; i < 50; i++) expect(h.app.executions.get(String(i)), `item ${i}`).toBe(1);
    // The faults really happened: more requests than items, some of them dropped after commit.
    expect(h.server.seen.length).toBeGreaterThan(50);
    expect(h.server.seen.some((s) => s.fault?.kind === 'drop-after')).toBe(true);
    // One key per item, on every attempt of that item.
    const keysByItem = new Map<string, Set<string | null>>();
    for (const s of h.server.seen) {
      const item = String((JSON.parse(s.body) as { item: number }).item);
      keysByItem.set(item, (keysByItem.get(item) ?? new Set()).add(s.key));
    }
    expect([...keysByItem.values()].every((keys) => keys.size === 1)).toBe(true);
    expect(new Set(results.map((r) => r.key)).size).toBe(50);
  });

  it('a re-run after a simulated crash executes only the items whose outcome was not recorded', async () => {
    const h = await startHarness(randomFaults(SEED + 1));
    const idemFetch = createIdempotentFetch({ maxAttempts: 8, sleep: recordingSleep(2).sleep });
    const items = itemsOf(50, 'crash');
    const crash = new AbortController();
    let done = 0;
    const work = async (
      item: { item: number },
      ctx: { key: string; signal: AbortSignal | undefined },
    ) => {
      const response = await idemFetch(
        `${h.url}/charges`,
        postJson(item, {
          headers: { 'Idempotency-Key': ctx.key },
          ...(ctx.signal ? { signal: ctx.signal } : {}),
        }),
      );
      if (response.status !== 201) throw new Error(`status ${response.status}`);
      const body = (await response.json()) as { item: number; charge: string };
      if (++done === 20) crash.abort(new Error('simulated crash'));
      return { ...body, replayed: getIdempotencyInfo(response)?.replayed ?? false };
    };

    const first = await runBatch(items, work, { concurrency: 5, signal: crash.signal });
    const failedFirst = first.results.filter((r) => !r.ok).length;
    expect(failedFirst).toBeGreaterThan(0);
    // Let requests that reached the server before the crash finish and be recorded.
    while (h.app.inFlight() > 0) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    const executedBefore = new Set(h.app.executions.keys());
    expect(executedBefore.size).toBeGreaterThanOrEqual(20);
    expect(executedBefore.size).toBeLessThan(50);

    // The same items give the same batch id, so every item gets its old key.
    const second = await runBatch(items, work, { concurrency: 5 });
    expect(second.batchId).toBe(first.batchId);
    expect(second.results.map((r) => r.key)).toEqual(first.results.map((r) => r.key));
    expect(second.results.every((r) => r.ok)).toBe(true);
    for (let i = 0; i < 50; i++) expect(h.app.executions.get(String(i)), `item ${i}`).toBe(1);
    // Recorded items were replayed, never executed again; the rest executed during the re-run
    // (a fault there can make one of those a replay too, of its own re-run execution).
    const replayed = new Set(
      second.results.filter((r) => r.ok && r.value.replayed).map((r) => String(r.index)),
    );
    for (const item of executedBefore) expect(replayed.has(item), `item ${item}`).toBe(true);
    const executedInRerun = [...h.app.executions.keys()].filter((k) => !executedBefore.has(k));
    expect(executedInRerun).toHaveLength(50 - executedBefore.size);
    // Items the first run completed come back with the same charge.
    for (const r of first.results) {
      const again = second.results[r.index];
      if (r.ok && again?.ok) expect(again.value.charge).toBe(r.value.charge);
    }
  });

  it('gives every item its own result: one failure does not sink the batch', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch();
    const items = [{ item: 'ok-1' }, { item: 'bad', status: 422 }, { item: 'ok-2' }];
    const { results } = await runBatch(items, async (item, { key }) => {
      const response = await idemFetch(
        `${h.url}/charges`,
        postJson(item, { headers: { 'Idempotency-Key': key } }),
      );
      if (!response.ok) throw new Error(`status ${response.status}`);
      return response.status;
    });
    expect(results.map((r) => r.ok)).toEqual([true, false, true]);
    expect(results[1]).toMatchObject({ ok: false, error: new Error('status 422') });
    expect(h.server.seen).toHaveLength(3);
  });

  it('keys items by their own key, so a reordered re-run keeps every key', async () => {
    const h = await startHarness();
    const idemFetch = createIdempotentFetch();
    const send = async (item: { item: string }, { key }: { key: string }) => {
      const response = await idemFetch(
        `${h.url}/charges`,
        postJson(item, { headers: { 'Idempotency-Key': key } }),
      );
      return getIdempotencyInfo(response)?.replayed;
    };
    const options = { batchId: 'orders-2026-11-28', itemKey: (i: { item: string }) => i.item };
    const first = await runBatch([{ item: 'a' }, { item: 'b' }, { item: 'c' }], send, options);
    const second = await runBatch([{ item: 'c' }, { item: 'a' }, { item: 'b' }], send, options);
    expect(first.results.map((r) => r.ok && r.value)).toEqual([false, false, false]);
    expect(second.results.map((r) => r.ok && r.value)).toEqual([true, true, true]);
    expect(second.results.map((r) => r.key)).toEqual([
      first.results[2]?.key,
      first.results[0]?.key,
      first.results[1]?.key,
    ]);
    expect(h.app.total()).toBe(3);
  });

  it('bounds concurrency', async () => {
    let running = 0;
    let peak = 0;
    const { results } = await runBatch(
      Array.from({ length: 20 }, (_, i) => i),
      async (i) => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 5));
        running--;
        return i * 2;
      },
      { concurrency: 3 },
    );
    expect(peak).toBe(3);
    expect(results.map((r) => r.ok && r.value)).toEqual(
      Array.from({ length: 20 }, (_, i) => i * 2),
    );
  });

  it('derives the batch id from content and refuses duplicate own keys', async () => {
    const noop = async () => 0;
    const a = await runBatch([{ x: 1 }, { x: 2 }], noop);
    const b = await runBatch([{ x: 1 }, { x: 2 }], noop);
    const c = await runBatch([{ x: 2 }, { x: 1 }], noop);
    expect(a.batchId).toBe(b.batchId);
    expect(c.batchId).not.toBe(a.batchId);
    expect(a.results.map((r) => r.key)).toEqual(b.results.map((r) => r.key));
    await expect(
      runBatch([1, 2], noop, { batchId: 'b', itemKey: () => 'same' }),
    ).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('same key for two items'),
    });
  });

  it('refuses an own key that is not a string: a number would be read as another item index', async () => {
    const noop = async () => 0;
    const orders = [{ id: 3 }, { id: 0 }];
    // A JavaScript caller's numeric ids: order 3 would get the key of the item at index 3.
    const itemKey = ((order: { id: number }) => order.id) as unknown as (o: {
      id: number;
    }) => string;
    await expect(runBatch(orders, noop, { batchId: 'b', itemKey })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('not a string'),
    });
  });
});
