import { type RecordStatus, type StoredRecord, StoreUnavailableError } from '@idem/core';
import { HEADER_BYTES, ORIGIN_FORMAT, RECORD_FORMAT } from './scripts.js';

/** A RESP reply as ioredis hands it to a `...Buffer` command: bulk strings stay bytes. */
export type Reply = Buffer | number | null | Reply[];

/** Header byte 1 to status (see scripts.ts). */
const STATUSES: readonly (RecordStatus | undefined)[] = [
  undefined,
  'in_progress',
  'completed',
  'released',
];

/** The header byte of a status. */
export const statusCode = (status: RecordStatus): number => STATUSES.indexOf(status);

/** The status of a header byte a script answered; a byte no store writes is a broken store. */
export function statusOf(code: number): RecordStatus {
  const status = STATUSES[code];
  if (status === undefined) throw malformed(`unknown status ${code}`);
  return status;
}

/** An integer reply. */
export function integer(value: Reply | undefined): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new StoreUnavailableError(`Redis returned a malformed number: ${describeReply(value)}`);
  }
  return value;
}

/**
 * What a reply was, for an error message: a number as it is, anything else by its kind and
 * size only. A bulk string where a number was due may be a record's bytes (an outcome, a
 * caller's data): they never reach an error message, a log or a span.
 */
export function describeReply(value: Reply | undefined): string {
  if (typeof value === 'number' || value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return `an array of ${value.length} replies`;
  return `a bulk string of ${value.length} bytes`;
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
 * A format-1 record's origin is its owner; a format-2 record's, its origin section.
 * With `copy`, the outcome is copied into a plain Uint8Array that does not pin the socket's
 * buffer; without, it is a plain Uint8Array view of the reply's bytes.
 */
export function toRecord(value: Reply | undefined, copy: boolean): StoredRecord {
  if (!Buffer.isBuffer(value) || value.length < HEADER_BYTES) throw malformed('too short');
  const format = value[0];
  if (format !== RECORD_FORMAT && format !== ORIGIN_FORMAT) {
    throw malformed(`unknown format ${format}`);
  }
  const status = statusOf(value[1]!);
  const ownerEnd = HEADER_BYTES + value.readUInt32BE(34);
  const fingerprintEnd = ownerEnd + value.readUInt32BE(38);
  if (fingerprintEnd > value.length) throw malformed('truncated');
  const owner = value.toString('utf8', HEADER_BYTES, ownerEnd);
  let origin = owner;
  let outcomeStart = fingerprintEnd;
  if (format === ORIGIN_FORMAT) {
    if (fingerprintEnd + 4 > value.length) throw malformed('truncated');
    outcomeStart = fingerprintEnd + 4 + value.readUInt32BE(fingerprintEnd);
    if (outcomeStart > value.length) throw malformed('truncated');
    // No store writes an empty origin (an owner token is never empty).
    if (outcomeStart === fingerprintEnd + 4) throw malformed('empty origin');
    origin = value.toString('utf8', fingerprintEnd + 4, outcomeStart);
  }
  const record: StoredRecord = {
    status,
    fingerprint: value.toString('utf8', ownerEnd, fingerprintEnd),
    owner,
    fence: safe(value.readDoubleBE(2)),
    origin,
    leaseUntil: safe(value.readDoubleBE(10)),
    expiresAt: safe(value.readDoubleBE(18)),
  };
  if (status === 'completed') {
    const start = value.byteOffset + outcomeStart;
    const length = value.length - outcomeStart;
    record.outcome = copy
      ? new Uint8Array(value.subarray(outcomeStart))
      : new Uint8Array(value.buffer, start, length);
  }
  return record;
}
