import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { StoreUnavailableError } from '@idem/core';
import type { PostgresStore } from '@idem/store-postgres';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { type Backend, openBackend } from '../src/backend.js';
import type { LedgerEntry } from '../src/ledger/ledger.js';
import { billPersistently, isTransientStoreFailure } from '../src/ledger/persistent-bill.js';
import { createPostgresLedger } from '../src/ledger/postgres-ledger.js';
import { deleteDemoRows } from '../src/stores/postgres-cleanup.js';
import { completingWithBills } from '../src/stores/postgres-connection.js';

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

/** A request's message id in these tests (the app derives it from the request's originId). */
const idOf = (storageKey: string) => `msg_${storageKey.slice(0, 32)}`;

const bill = (storageKey: string, fence: number): LedgerEntry => ({
  messageId: idOf(storageKey),
  model: 'local-1',
  promptTokens: 3,
  completionTokens: 4,
  totalTokens: 7,
  fence,
  billedAt: Date.now(),
});

describe('rev13: PostgreSQL staged bills past MAX_STAGED', () => {
  // FIXED (was FINDING LOW, billing): on PostgreSQL a keyed bill is staged in process memory
  // (`createPostgresLedger`'s `pending`, at most MAX_STAGED = 10,000) and written by the
  // transaction that completes the record; `completingWithBills.complete` completes a record
  // that has no staged bill without billing. The oldest staged bill was dropped to make room,
  // so once more than 10,000 executions sat between their bill and their completion (a
  // PostgreSQL outage under load) the oldest live ones completed unbilled: the answer recorded
  // and replayed, the tokens never billed, against the README's "an answer is recorded and
  // billed together or not at all". Reproduced by the first test (acquire, bill, 10,000 other
  // bills, complete: the record was completed, the ledger had no bill for it).
  // Fix: a live staged bill is never dropped. Room is made by dropping bills staged longer
  // ago than an execution can complete (twice core's maxHoldMs); while every slot holds a
  // live bill, a new one is refused as a transient store failure, so `billPersistently`
  // retries it until a completion makes room (the client hears 503 after the lease).
  it('a completed keyed record always carries its bill; the bill past the bound waits', async () => {
    const key = randomBytes(32).toString('hex');
    const owner = 'owner-a';
    await backend.store.acquire({
      key,
      owner,
      fingerprint: '',
      leaseMs: 30_000,
      retentionMs: HOUR,
    });
    expect(await backend.ledger.bill(bill(key, 1), key)).toBe('billed');
    const answers: Record<string, number> = {};
    let refusal: unknown;
    for (let i = 0; i < 10_000; i++) {
      try {
        const other = randomBytes(32).toString('hex');
        const result = await backend.ledger.bill(bill(other, 1), other);
        answers[result] = (answers[result] ?? 0) + 1;
      } catch (error) {
        refusal ??= error;
        answers.refused = (answers.refused ?? 0) + 1;
      }
    }
    expect(answers).toEqual({ billed: 9_999, refused: 1 });
    expect(isTransientStoreFailure(refusal)).toBe(true);
    const done = await backend.store.complete({
      key,
      owner,
      outcome: new Uint8Array([1]),
      retentionMs: HOUR,
    });
    expect(done).toEqual({ ok: true });
    expect((await backend.store.get(key))?.status).toBe('completed');
    const billed = (await backend.ledger.entries()).map((e) => e.messageId);
    expect(billed).toContain(idOf(key));
    // Its completion made room: the next bill is staged.
    const another = randomBytes(32).toString('hex');
    expect(await backend.ledger.bill(bill(another, 1), another)).toBe('billed');
  }, 30_000);

  const noPool = {
    query: () => {
      throw new Error('a staged bill never reaches the pool');
    },
  } as never;

  it('makes room by dropping only bills staged longer ago than an execution can complete', async () => {
    let clock = 0;
    const ledger = createPostgresLedger(noPool, prefix, {
      maxStaged: 3,
      stagedForMs: 10_000,
      now: () => clock,
    });
    const [a, b, c, d, e] = Array.from({ length: 5 }, () => randomBytes(32).toString('hex'));
    expect(await ledger.bill(bill(a as string, 1), a as string)).toBe('billed');
    clock = 5_000;
    expect(await ledger.bill(bill(b as string, 1), b as string)).toBe('billed');
    expect(await ledger.bill(bill(c as string, 1), c as string)).toBe('billed');
    // Full, none dead: refused, nothing dropped.
    await expect(ledger.bill(bill(d as string, 1), d as string)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    expect([a, b, c].map((k) => ledger.staged(k as string)?.fence)).toEqual([1, 1, 1]);
    // A takeover's bill for a staged key needs no new slot: it replaces, even when full.
    expect(await ledger.bill(bill(b as string, 2), b as string)).toBe('replaced');
    // `a` was staged 10 s ago: its execution can no longer complete; it makes room.
    clock = 10_000;
    expect(await ledger.bill(bill(d as string, 1), d as string)).toBe('billed');
    expect(ledger.staged(a as string)).toBeUndefined();
    // `b` (re-staged at 5 s), `c` and `d` are live: the next one waits.
    await expect(ledger.bill(bill(e as string, 1), e as string)).rejects.toBeInstanceOf(
      StoreUnavailableError,
    );
    expect([b, c, d].map((k) => ledger.staged(k as string)?.fence)).toEqual([2, 1, 1]);
  });

  it('a bill refused while the ledger is full lands once a completion makes room', async () => {
    const ledger = createPostgresLedger(noPool, prefix, { maxStaged: 1 });
    const [a, b] = [randomBytes(32).toString('hex'), randomBytes(32).toString('hex')];
    expect(await ledger.bill(bill(a, 1), a)).toBe('billed');
    const waiting = billPersistently(ledger, bill(b, 1), { retryForMs: 5_000, recordKey: b });
    let settled = false;
    void waiting.finally(() => {
      settled = true;
    });
    await sleep(200);
    expect(settled).toBe(false);
    ledger.unstage(a);
    await expect(waiting).resolves.toBe('billed');
    expect(ledger.staged(b)?.fence).toBe(1);
  });

  it("an old execution's release answered late never unstages the bill of the key's new owner", async () => {
    // A's release commits, but its answer reaches this process late (a slow connection):
    // meanwhile a retry took the key (fence 2) in this process, ran the model and staged
    // its bill, replacing A's. A's `ok` must not unstage B's bill: B would complete unbilled.
    const ledger = createPostgresLedger(noPool, prefix);
    let answer: (result: { ok: true }) => void = () => undefined;
    const store = {
      release: () =>
        new Promise((resolve) => {
          answer = resolve;
        }),
    } as unknown as PostgresStore;
    const wrapped = completingWithBills(store, noPool, ledger);
    const key = randomBytes(32).toString('hex');
    expect(await ledger.bill(bill(key, 1), key)).toBe('billed');
    const releasing = wrapped.release({ key, owner: 'owner-a', retentionMs: HOUR });
    expect(await ledger.bill(bill(key, 2), key)).toBe('replaced');
    answer({ ok: true });
    expect(await releasing).toEqual({ ok: true });
    expect(ledger.staged(key)?.fence).toBe(2);
  });

  it('a release that succeeds unstages the bill its execution staged', async () => {
    const ledger = createPostgresLedger(noPool, prefix);
    const store = { release: async () => ({ ok: true }) } as unknown as PostgresStore;
    const wrapped = completingWithBills(store, noPool, ledger);
    const key = randomBytes(32).toString('hex');
    expect(await ledger.bill(bill(key, 1), key)).toBe('billed');
    expect(await wrapped.release({ key, owner: 'owner-a', retentionMs: HOUR })).toEqual({
      ok: true,
    });
    expect(ledger.staged(key)).toBeUndefined();
  });

  // Review of 7cfda0b (finding C, LOW): a completion answered not-owner rolled back and left
  // its staged bill, since the staged bill may be the new owner's (a takeover in this
  // process). After a takeover by another process nothing replaced it: it held a slot for two
  // hours, and enough of them refused every new keyed bill meanwhile. Now the completion reads
  // the record: a bill below the record's fence (or of a record gone) is dropped.
  it("a completion that lost the key drops its own staged bill, never the new owner's", async () => {
    // A backend of its own: the first test filled the shared one's staging.
    const own = `${prefix}own:`;
    const backend = await openBackend({ kind: 'postgres', url: DATABASE_URL }, own, {
      timeoutMs: 2_000,
    });
    onTestFinished(async () => {
      await deleteDemoRows(DATABASE_URL, own).catch(() => undefined);
      await backend.close();
    });
    const store = backend.store;
    // Another process took the key over: this process's bill is dead.
    const lost = randomBytes(32).toString('hex');
    const input = { fingerprint: '', leaseMs: 50, retentionMs: HOUR };
    expect((await store.acquire({ key: lost, owner: 'owner-a', ...input })).kind).toBe('acquired');
    expect(await backend.ledger.bill(bill(lost, 1), lost)).toBe('billed');
    await sleep(120);
    const taken = await store.acquire({ key: lost, owner: 'owner-b', ...input, leaseMs: 30_000 });
    expect(taken).toMatchObject({ kind: 'acquired', fence: 2, takeover: true });
    const outcome = new Uint8Array([1]);
    expect(
      await store.complete({ key: lost, owner: 'owner-a', outcome, retentionMs: HOUR }),
    ).toEqual(expect.objectContaining({ ok: false }));
    // Its slot is free again: the bill the ledger would take next for this key is new.
    expect(await backend.ledger.bill(bill(lost, 2), lost)).toBe('billed');

    // A takeover in this process: the staged bill is the new owner's, and stays.
    const mine = randomBytes(32).toString('hex');
    expect((await store.acquire({ key: mine, owner: 'owner-a', ...input })).kind).toBe('acquired');
    expect(await backend.ledger.bill(bill(mine, 1), mine)).toBe('billed');
    await sleep(120);
    expect(
      await store.acquire({ key: mine, owner: 'owner-b', ...input, leaseMs: 30_000 }),
    ).toMatchObject({ kind: 'acquired', fence: 2 });
    expect(await backend.ledger.bill(bill(mine, 2), mine)).toBe('replaced');
    expect(
      await store.complete({ key: mine, owner: 'owner-a', outcome, retentionMs: HOUR }),
    ).toEqual(expect.objectContaining({ ok: false }));
    expect(
      await store.complete({ key: mine, owner: 'owner-b', outcome, retentionMs: HOUR }),
    ).toEqual({ ok: true });
    const billed = (await backend.ledger.entries()).filter((e) => e.messageId === idOf(mine));
    expect(billed.map((e) => e.fence)).toEqual([2]);
  }, 20_000);
});
