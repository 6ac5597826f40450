/**
 * originrev (adversarial review of the origin guarantee): PostgreSQL bills are staged in
 * process by the record's storage key, one slot a key, and written by the transaction that
 * completes the record. Two logical requests under one key (the key used again once its
 * record expired: a new originId, so a new message id) met in that slot: a late bill of the
 * earlier request's execution (its `billPersistently` retry after a transient failure, or a
 * bill sent by an execution that outlived its record) took the slot from the later
 * request's staged bill "whatever their fences", and the later request's completion then
 * wrote the earlier request's bill in its transaction: the earlier message billed (its answer
 * never recorded), the later one, whose answer was recorded and is replayed, never billed.
 *
 * Fix: under one record key, fences keep growing across logical requests (the row expires in
 * place and the next acquisition takes fence + 1; `deleteExpired` forgets it only long after
 * any staged bill aged out), so a bill for another message with a lower fence belongs to an
 * execution that can no longer complete: it is refused as stale (StaleFenceError), and the
 * live slot stays. A higher fence of another message (the later request) still takes the
 * slot of an earlier one's, as before, and so does any bill once the staged one aged out.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Backend, openBackend } from '../src/backend.js';
import { type LedgerEntry, StaleFenceError } from '../src/ledger/ledger.js';
import { createPostgresLedger } from '../src/ledger/postgres-ledger.js';
import { deleteDemoRows } from '../src/stores/postgres-cleanup.js';

const DATABASE_URL = process.env.DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/test';
const prefix = `llm-originrev:${randomBytes(4).toString('hex')}:`;
let backend: Backend;

beforeAll(async () => {
  backend = await openBackend({ kind: 'postgres', url: DATABASE_URL }, prefix, {
    timeoutMs: 2_000,
  });
});
afterAll(async () => {
  await deleteDemoRows(DATABASE_URL, prefix).catch(() => undefined);
  await backend?.close();
});

const entry = (messageId: string, fence: number, tokens: number): LedgerEntry => ({
  messageId,
  model: 'local-1',
  promptTokens: tokens,
  completionTokens: tokens,
  totalTokens: 2 * tokens,
  fence,
  billedAt: Date.now(),
});

describe('originrev: two logical requests under one PostgreSQL record key', () => {
  it("a late bill of the expired request's execution does not take the staged bill of the request that completes", async () => {
    const key = randomBytes(32).toString('hex');
    const acquire = (owner: string) =>
      backend.store.acquire({ key, owner, fingerprint: '', leaseMs: 100, retentionMs: 200 });
    // Request 1: its execution bills (staged), then stalls past its record's retention.
    const first = await acquire('owner-1');
    expect(first).toMatchObject({ kind: 'acquired', fence: 1 });
    const bill1 = entry('msg_request_1', 1, 111);
    expect(await backend.ledger.bill(bill1, key)).toBe('billed');
    await sleep(400);
    // Request 2 under the same key (expired in place: fence 2, a new origin).
    const second = await acquire('owner-2');
    expect(second).toMatchObject({ kind: 'acquired', fence: 2, origin: 'owner-2' });
    const bill2 = entry('msg_request_2', 2, 222);
    expect(await backend.ledger.bill(bill2, key)).toBe('billed');
    // Request 1's bill again (its retry after a transient ledger failure): stale.
    await expect(backend.ledger.bill(bill1, key)).rejects.toBeInstanceOf(StaleFenceError);
    // Request 2 completes: its own bill lands with it; request 1's never does.
    expect(
      await backend.store.complete({
        key,
        owner: 'owner-2',
        outcome: new Uint8Array([2]),
        retentionMs: 60_000,
      }),
    ).toEqual({ ok: true });
    const billed = (await backend.ledger.entries()).filter((e) =>
      e.messageId.startsWith('msg_request_'),
    );
    expect(billed.map((e) => [e.messageId, e.fence, e.totalTokens])).toEqual([
      ['msg_request_2', 2, 444],
    ]);
  });

  const noPool = {
    query: () => {
      throw new Error('a staged bill never reaches the pool');
    },
  } as never;

  it('the later request (higher fence) still takes the slot, and so does any bill once the staged one aged out', async () => {
    let clock = 0;
    const ledger = createPostgresLedger(noPool, prefix, { stagedForMs: 10_000, now: () => clock });
    const key = randomBytes(32).toString('hex');
    expect(await ledger.bill(entry('msg_a', 3, 1), key)).toBe('billed');
    expect(await ledger.bill(entry('msg_b', 4, 1), key)).toBe('billed');
    expect(ledger.staged(key)?.messageId).toBe('msg_b');
    await expect(ledger.bill(entry('msg_a', 3, 1), key)).rejects.toBeInstanceOf(StaleFenceError);
    // Aged out (its execution can no longer complete): a lower fence takes it (a record
    // `deleteExpired` forgot starts again at fence 1).
    clock = 10_000;
    expect(await ledger.bill(entry('msg_c', 1, 1), key)).toBe('billed');
    expect(ledger.staged(key)?.messageId).toBe('msg_c');
  });
});
