import type { OwnerWriteResult, RecordInspection, StoredRecord } from '../store.js';

/** The answer of an owner-checked write that changed nothing. */
export const NOT_OWNER: OwnerWriteResult = Object.freeze({ ok: false, reason: 'not_owner' });

/** The answer of an owner-checked write that applied (without a lease deadline). */
export const OWNED: OwnerWriteResult = Object.freeze({ ok: true });

/** `OWNED` (with `leaseUntil` when given) when `applied`, else `NOT_OWNER`. */
export function ownerWriteResult(applied: boolean, leaseUntil?: number): OwnerWriteResult {
  if (!applied) return NOT_OWNER;
  return leaseUntil === undefined ? OWNED : { ok: true, leaseUntil };
}

/**
 * True when a record found at `acquire` blocks a new acquisition at `now`: in progress with
 * a live lease, or completed within retention (an expired record never blocks).
 */
export function blocksAcquire(record: StoredRecord, now: number): boolean {
  return (
    now < record.expiresAt &&
    ((record.status === 'in_progress' && now < record.leaseUntil) || record.status === 'completed')
  );
}

/** True when both byte arrays hold the same bytes. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** What `admin.inspect` answers for a record read at `now` (outcome size instead of bytes). */
export function inspectionOf(
  record: Omit<StoredRecord, 'outcome'>,
  now: number,
  outcomeBytes: number,
): RecordInspection {
  return {
    status: record.status,
    fingerprint: record.fingerprint,
    owner: record.owner,
    fence: record.fence,
    leaseUntil: record.leaseUntil,
    expiresAt: record.expiresAt,
    outcomeBytes,
    now,
  };
}
