import assert from 'node:assert/strict';
import {
  type AcquireInput,
  type AcquireResult,
  OutcomeTooLargeError,
  type StoredRecord,
} from '@idem/core';
import type { Harness } from './harness.js';
import { randomHex } from './harness.js';

/** One example-based check of the contract. Throws an AssertionError when the store breaks it. */
export interface ContractCheck {
  group: string;
  name: string;
  run(h: Harness): Promise<void>;
}

export const RETENTION_MS = 3_600_000;

/** Bytes either side of the first difference that a failed {@link assertSameBytes} shows. */
const SHOWN_BYTES = 16;

/**
 * Asserts two byte strings (or their absence) are equal, failing with a short message: both
 * lengths, the first offset where they differ and a few bytes around it, in hex.
 *
 * Not `assert.deepEqual` on the bytes: from Node 22 on, `node:assert/strict` builds its diff
 * of two differing byte arrays one line a byte, even with a message of the check's own, in
 * time and memory that grow with the square of their length: for the 256 KiB and 4 MiB
 * outcomes of the suite, a store that corrupts them took the whole machine's memory (21 GB)
 * on Node 24 instead of failing.
 */
export function assertSameBytes(
  actual: Uint8Array | undefined | null,
  expected: Uint8Array | undefined | null,
  message: string,
): void {
  if (actual == null || expected == null) {
    if (actual === expected) return;
    const what = (bytes: Uint8Array | undefined | null) =>
      bytes == null ? String(bytes) : `${bytes.length} bytes`;
    throw new assert.AssertionError({
      message: `${message}: got ${what(actual)}, expected ${what(expected)}`,
      operator: 'assertSameBytes',
    });
  }
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const b = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(b)) return;
  let at = 0;
  while (at < a.length && at < b.length && a[at] === b[at]) at++;
  const window = (bytes: Buffer) => {
    const from = Math.max(0, at - SHOWN_BYTES);
    const to = Math.min(bytes.length, at + SHOWN_BYTES);
    return `${from > 0 ? '…' : ''}${bytes.subarray(from, to).toString('hex')}${to < bytes.length ? '…' : ''}`;
  };
  throw new assert.AssertionError({
    message:
      `${message}: got ${a.length} bytes, expected ${b.length}, first difference at byte ${at}` +
      ` (got ${window(a)}, expected ${window(b)})`,
    operator: 'assertSameBytes',
  });
}

export function acquireInput(
  h: Harness,
  key: string,
  extra: Partial<AcquireInput> = {},
): AcquireInput {
  return {
    key,
    fingerprint: extra.fingerprint ?? 'fp-a',
    owner: extra.owner ?? `owner-${randomHex(8)}`,
    leaseMs: extra.leaseMs ?? h.time.leaseMs,
    retentionMs: extra.retentionMs ?? RETENTION_MS,
  };
}

export function assertAcquired(
  result: AcquireResult,
  message?: string,
): Extract<AcquireResult, { kind: 'acquired' }> {
  assert.equal(
    result.kind,
    'acquired',
    message ?? `expected acquired, got ${JSON.stringify(result)}`,
  );
  return result as Extract<AcquireResult, { kind: 'acquired' }>;
}

export function assertFound(
  result: AcquireResult,
  message?: string,
): Extract<AcquireResult, { kind: 'found' }> {
  assert.equal(result.kind, 'found', message ?? `expected found, got ${JSON.stringify(result)}`);
  return result as Extract<AcquireResult, { kind: 'found' }>;
}

/** Reads a record through both channels and checks they agree on the contract fields. */
export async function readBoth(h: Harness, key: string): Promise<StoredRecord | undefined> {
  const viaStore = await h.store.get(key);
  const viaRaw = await h.raw(key);
  assert.equal(
    viaRaw === undefined,
    viaStore === undefined,
    'get() and the raw read disagree on existence',
  );
  if (viaStore && viaRaw) {
    for (const field of [
      'status',
      'fingerprint',
      'owner',
      'fence',
      'leaseUntil',
      'expiresAt',
    ] as const) {
      assert.deepEqual(
        viaRaw[field],
        viaStore[field],
        `get() and the raw read disagree on ${field}`,
      );
    }
    assertSameBytes(
      viaRaw.outcome,
      viaStore.outcome,
      'get() and the raw read disagree on the outcome bytes',
    );
  }
  return viaStore;
}

/** Asserts the persisted record has exactly these contract fields (deadlines excluded). */
export async function expectRecord(
  h: Harness,
  key: string,
  expected: Pick<StoredRecord, 'status' | 'owner' | 'fence'> & { outcome?: Uint8Array | undefined },
): Promise<StoredRecord> {
  const record = await readBoth(h, key);
  assert.ok(record, 'expected a record, found none');
  assert.equal(record.status, expected.status, 'status');
  assert.equal(record.owner, expected.owner, 'owner');
  assert.equal(record.fence, expected.fence, 'fence');
  if ('outcome' in expected) {
    assertSameBytes(record.outcome, expected.outcome, 'outcome bytes');
  }
  return record;
}

export function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/**
 * Acquires a fresh key and completes it with `encoded`: expects it stored (checked through
 * both channels), or, past the store's declared limit, refused with OutcomeTooLargeError
 * leaving the record untouched.
 */
export async function storeOutcome(
  h: Harness,
  encoded: Uint8Array,
): Promise<{ key: string; outcome: 'stored' | 'refused' }> {
  const key = h.newKey();
  const input = acquireInput(h, key);
  assertAcquired(await h.store.acquire(input));
  const complete = () =>
    h.store.complete({ key, owner: input.owner, outcome: encoded, retentionMs: RETENTION_MS });
  const limit = h.store.capabilities.maxOutcomeBytes;
  if (limit !== undefined && encoded.length > limit) {
    await assert.rejects(complete(), OutcomeTooLargeError);
    await expectRecord(h, key, {
      status: 'in_progress',
      owner: input.owner,
      fence: 1,
      outcome: undefined,
    });
    return { key, outcome: 'refused' };
  }
  assert.deepEqual(await complete(), { ok: true });
  await expectRecord(h, key, {
    status: 'completed',
    owner: input.owner,
    fence: 1,
    outcome: encoded,
  });
  // The replay path too: another owner's acquire answers `found` with the outcome, byte for
  // byte (a store may read large values back differently there than in `get`).
  const found = assertFound(
    await h.store.acquire(acquireInput(h, key)),
    'a completed key is replayed',
  );
  assert.equal(found.record.status, 'completed');
  assertSameBytes(found.record.outcome, encoded, 'the replayed outcome (acquire by another owner)');
  return { key, outcome: 'stored' };
}
