import { type RecordStatus, type StoredRecord, StoreUnavailableError } from '@idem/core';
import { HEADER_BYTES, RECORD_FORMAT } from './scripts.js';

/** A RESP reply as ioredis hands it to a `...Buffer` command: bulk strings stay bytes. */
export type Reply = Buffer | number | null | Reply[];

/** Header byte 1 to status (see scripts.ts). */
const STATUSES: readonly (RecordStatus | undefined)[] = [
  undefined,
  'in_progress',
  'completed',
  'released',
];

/** An integer reply. */
export function integer(value: Reply | undefined): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new StoreUnavailableError(`Redis returned a malformed number: ${String(value)}`);
  }
  return value;
}

function malformed(what: string): StoreUnavailableError {
  return new StoreUnavailableError(`Redis returned a malformed record: ${what}`);
}

/** A header number: an integer below 2^53. */
function safe(value: number): number {
  if (!Number.isSafeInteger(value)) throw malformed(`a deadline or fence of ${value}`);
  return value;
}

/**
 * Decodes a record's bytes as the scripts store and return them (the layout in scripts.ts).
 * With `copy`, the outcome is copied into a plain Uint8Array that does not pin the socket's
 * buffer; without, it is a plain Uint8Array view of the reply's bytes.
 */
export function toRecord(value: Reply | undefined, copy: boolean): StoredRecord {
  if (!Buffer.isBuffer(value) || value.length < HEADER_BYTES) throw malformed('too short');
  if (value[0] !== RECORD_FORMAT) throw malformed(`unknown format ${value[0]}`);
  const status = STATUSES[value[1]!];
  if (status === undefined) throw malformed(`unknown status ${value[1]}`);
  const ownerEnd = HEADER_BYTES + value.readUInt32BE(34);
  const fingerprintEnd = ownerEnd + value.readUInt32BE(38);
  if (fingerprintEnd > value.length) throw malformed('truncated');
  const record: StoredRecord = {
    status,
    fingerprint: value.toString('utf8', ownerEnd, fingerprintEnd),
    owner: value.toString('utf8', HEADER_BYTES, ownerEnd),
    fence: safe(value.readDoubleBE(2)),
    leaseUntil: safe(value.readDoubleBE(10)),
    expiresAt: safe(value.readDoubleBE(18)),
  };
  if (status === 'completed') {
    const start = value.byteOffset + fingerprintEnd;
    const length = value.length - fingerprintEnd;
    record.outcome = copy
      ? new Uint8Array(value.subarray(fingerprintEnd))
      : new Uint8Array(value.buffer, start, length);
  }
  return record;
}
