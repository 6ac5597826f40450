import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Backend, openBackend } from '../src/backend.js';
import { billingKeyOf } from '../src/http/metering.js';
import type { LedgerEntry } from '../src/ledger/ledger.js';
import { deleteDemoRows } from '../src/stores/postgres-cleanup.js';

const DATABASE_URL = process.env.DATABASE_URL?.trim() || 'postgres://postgres@127.0.0.1:5432/test';
const prefix = `llm-test:${randomBytes(4).toString('hex')}:`;
const HOUR = 3_600_000;
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

const bill = (storageKey: string, fence: number): LedgerEntry => ({
  messageId: `msg_${billingKeyOf(storageKey)}`,
  model: 'local-1',
  promptTokens: 3,
  completionTokens: 4,
  totalTokens: 7,
  fence,
  billedAt: Date.now(),
});

describe('rev13: PostgreSQL staged bills past MAX_STAGED', () => {
  // FINDING (LOW, billing; open): on PostgreSQL a keyed bill is staged in process memory
  // (`createPostgresLedger`'s `pending`, at most MAX_STAGED = 10,000, the oldest dropped) and
  // written by the transaction that completes the record. `completingWithBills.complete`
  // completes a record that has no staged bill without billing (`if (!bill) return
  // store.complete(input)`). So once more than 10,000 executions sit between their bill and
  // their completion (a PostgreSQL outage under load: every completion retries in the
  // background while each model run stages its bill; or dead entries of executions that lost
  // their lease or could not release, which are never removed otherwise), the oldest live
  // ones lose their staged bill and complete unbilled: the answer is recorded and replayed,
  // the tokens are never billed, against the README's "an answer is recorded and billed
  // together or not at all". Reproduce: this test (acquire, bill, 10,000 other bills,
  // complete: the record is completed, the ledger has no bill for it).
  // Suggested fix: a keyed completion (fence >= 1) whose staged bill is gone fails as a store
  // failure instead of completing unbilled (core retries it; the lease runs out and a retry
  // bills), and dead entries are dropped when their execution ends (not-owner answers).
  it.fails('a completed keyed record always carries its bill', async () => {
    const key = randomBytes(32).toString('hex');
    const owner = 'owner-a';
    await backend.store.acquire({
      key,
      owner,
      fingerprint: '',
      leaseMs: 30_000,
      retentionMs: HOUR,
    });
    expect(await backend.ledger.bill(bill(key, 1))).toBe('billed');
    for (let i = 0; i < 10_000; i++)
      await backend.ledger.bill(bill(randomBytes(32).toString('hex'), 1));
    const done = await backend.store.complete({
      key,
      owner,
      outcome: new Uint8Array([1]),
      retentionMs: HOUR,
    });
    expect(done).toEqual({ ok: true });
    expect((await backend.store.get(key))?.status).toBe('completed');
    const billed = (await backend.ledger.entries()).map((e) => e.messageId);
    expect(billed).toContain(`msg_${billingKeyOf(key)}`);
  }, 30_000);
});
