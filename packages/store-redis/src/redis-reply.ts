import { type RecordStatus, type StoredRecord, StoreUnavailableError } from '@idem/core';

/** A RESP reply as ioredis hands it to a `...Buffer` command: bulk strings stay bytes. */
export type Reply = Buffer | number | null | Reply[];

const STATUSES: ReadonlySet<string> = new Set<RecordStatus>([
  'in_progress',
  'completed',
  'released',
]);

/** A bulk string (or integer) reply as UTF-8 text. */
export function text(value: Reply | undefined): string {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'number') return String(value);
  throw new StoreUnavailableError(`Redis returned a malformed record field: ${String(value)}`);
}

/** An integer reply, or a bulk string holding a decimal integer. */
export function integer(value: Reply | undefined): number {
  const n = typeof value === 'number' ? value : Number(text(value));
  if (!Number.isSafeInteger(n)) {
    throw new StoreUnavailableError(`Redis returned a malformed number: ${String(value)}`);
  }
  return n;
}

/** Copies reply bytes into a plain Uint8Array that does not pin the socket's buffer. */
function bytes(value: Buffer): Uint8Array {
  const out = new Uint8Array(value.length);
  out.set(value);
  return out;
}

/** Decodes `{s, fp, o, f, lu, ex[, out]}` as the scripts return it. */
export function toRecord(fields: Reply[]): StoredRecord {
  const status = text(fields[0]);
  if (!STATUSES.has(status)) {
    throw new StoreUnavailableError(`Redis record has an unknown status: ${status}`);
  }
  const record: StoredRecord = {
    status: status as RecordStatus,
    fingerprint: text(fields[1]),
    owner: text(fields[2]),
    fence: integer(fields[3]),
    leaseUntil: integer(fields[4]),
    expiresAt: integer(fields[5]),
  };
  if (status === 'completed') {
    const outcome = fields[6];
    if (!Buffer.isBuffer(outcome)) {
      throw new StoreUnavailableError('Redis returned a completed record without an outcome');
    }
    record.outcome = bytes(outcome);
  }
  return record;
}
