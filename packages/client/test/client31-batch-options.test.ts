// client31: runBatch's options were not checked by name, unlike createIdempotentFetch's. A
// misspelt `batchId` (`batchID`) took the default, a batch id derived from the items: a monthly
// run of the same invoices with that typo is the same batch every month, and within the
// server's retention the server replays the first month's outcomes instead of charging (the
// README: "a batch with the same items is the same batch"). A misspelt `concurrency` or
// `itemKey` took its default the same way. Now refused, naming the near option, before any item
// runs (tests against a real node:http server behind @idem/http).
import { InvalidInputError } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createIdempotentFetch, getIdempotencyInfo, runBatch } from '../src/index.js';
import { startHarness } from './support/harness.js';

const invoices = [
  { item: 'invoice-acme', amount: 500 },
  { item: 'invoice-globex', amount: 700 },
];

async function charger() {
  const h = await startHarness();
  const idemFetch = createIdempotentFetch();
  const send = async (order: (typeof invoices)[number], { key }: { key: string }) => {
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

describe('client31: runBatch options checked before any item runs', () => {
  it('a misspelt batchId is refused, naming the option, and nothing is sent', async () => {
    const { h, send } = await charger();
    const november = await runBatch(invoices, send, { batchId: 'invoices-2026-11' });
    expect(november.results.every((r) => r.ok && r.value === false)).toBe(true);
    const before = h.server.seen.length;
    const error = await runBatch(invoices, send, { batchID: 'invoices-2026-12' } as never).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(InvalidInputError);
    expect(error).toMatchObject({ code: 'INVALID_INPUT' });
    expect((error as Error).message).toContain('did you mean batchId?');
    expect(h.server.seen.length).toBe(before);
    // The run it was meant to be executes (a new batch id): both items charged again, once.
    const december = await runBatch(invoices, send, { batchId: 'invoices-2026-12' });
    expect(december.results.map((r) => r.ok && r.value)).toEqual([false, false]);
    expect(h.app.executions.get('invoice-acme')).toBe(2);
  });

  it.each<[string, object, string]>([
    ['a misspelt concurrency', { concurency: 1 }, 'concurency is not an option'],
    ['a misspelt itemKey', { batchId: 'b', itemkey: () => 'k' }, 'did you mean itemKey?'],
    ['(held) a batchId that is not a string', { batchId: 42 }, 'batchId'],
    ['(held) an empty batchId', { batchId: '' }, 'batchId'],
  ])('%s is refused with INVALID_INPUT before any item runs', async (_name, options, says) => {
    let runs = 0;
    const error = await runBatch(
      [1, 2],
      async () => {
        runs++;
        return 'ran';
      },
      options as never,
    ).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidInputError);
    expect((error as Error).message).toContain(says);
    expect(runs).toBe(0);
  });

  it('held: an option given as undefined takes its default', async () => {
    const { results } = await runBatch([1, 2], async (n) => n * 2, {
      concurrency: undefined,
      batchId: undefined,
      signal: undefined,
    });
    expect(results.map((r) => r.ok && r.value)).toEqual([2, 4]);
  });
});
