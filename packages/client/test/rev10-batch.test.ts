// Review round 10 (rev10a): re-running a batch after a crash, as the README's own example
// does it (itemKey, no batchId), against a real node:http server behind @idem/http. Findings
// are `it.fails` (they state the correct behaviour); attacks that held are plain `it`.
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, getIdempotencyInfo, runBatch } from '../src/index.js';
import { startHarness } from './support/harness.js';

interface Order {
  item: string;
  amount: number;
}

async function charger() {
  const h = await startHarness();
  const idemFetch = createIdempotentFetch();
  const send = async (order: Order, { key }: { key: string }) => {
    const response = await idemFetch(`${h.url}/charges`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'Idempotency-Key': key },
      body: JSON.stringify(order),
    });
    await response.text();
    return getIdempotencyInfo(response)?.replayed ?? false;
  };
  return { h, send };
}

const a = { item: 'order-a', amount: 500 };
const b = { item: 'order-b', amount: 700 };
const c = { item: 'order-c', amount: 900 };
const d = { item: 'order-d', amount: 300 };
// The README's example before rev10a: items keyed by their own id, the batch id left to its
// default (derived from the items in order).
const withoutBatchId = { concurrency: 8, itemKey: (order: Order) => order.item };
// What the README asks for now: a batch id that names the run.
const options = { ...withoutBatchId, batchId: 'charges-run-1' };

describe('rev10a client: runBatch re-runs with itemKey', () => {
  // FIXED (was FINDING HIGH): with itemKey but no batchId (the README's own example), the
  // default batch id was derived from the items IN ORDER: a re-run whose items came back
  // reordered or extended (the documented reason for itemKey) got a new batch id, so every item
  // got a new key and every already-charged item was charged again (observed: six executions
  // for three orders, seven for a re-run extended by one). itemKey without a batchId is now
  // refused before anything runs.
  it('itemKey without a batchId is refused with INVALID_INPUT, before any item runs', async () => {
    const { h, send } = await charger();
    await expect(runBatch([a, b, c], send, withoutBatchId)).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('itemKey needs a batchId'),
    });
    expect(h.app.total()).toBe(0);
  });

  it('a re-run with the items reordered keeps every key: nothing runs twice', async () => {
    const { h, send } = await charger();
    const first = await runBatch([a, b, c], send, options);
    // The job crashed after its calls; the restart loads the same orders, in another order.
    const second = await runBatch([c, a, b], send, options);
    const seen = {
      sameBatchId: second.batchId === first.batchId,
      replayed: second.results.map((r) => r.ok && r.value),
      executions: h.app.total(),
    };
    expect(seen).toEqual({ sameBatchId: true, replayed: [true, true, true], executions: 3 });
  });

  it('a re-run extended with a new item runs only the new one', async () => {
    const { h, send } = await charger();
    await runBatch([a, b, c], send, options);
    const again = await runBatch([a, b, c, d], send, options);
    expect(again.results.map((r) => r.ok && r.value)).toEqual([true, true, true, false]);
    expect(h.app.total()).toBe(4);
  });

  it('held: the same items in the same order replay every item (3 executions in all)', async () => {
    const { h, send } = await charger();
    await runBatch([a, b, c], send, options);
    const again = await runBatch([a, b, c], send, options);
    expect(again.results.map((r) => r.ok && r.value)).toEqual([true, true, true]);
    expect(h.app.total()).toBe(3);
  });

  it('held: without itemKey the default batch id still comes from the items (index keys)', async () => {
    const { h, send } = await charger();
    const first = await runBatch([a, b, c], send, { concurrency: 8 });
    const again = await runBatch([a, b, c], send, { concurrency: 8 });
    expect(again.batchId).toBe(first.batchId);
    expect(again.results.map((r) => r.ok && r.value)).toEqual([true, true, true]);
    expect(h.app.total()).toBe(3);
  });
});
