import {
  type AdminRecordRead,
  createStoreAdmin,
  type RecordStatus,
  type StoreAdmin,
  StoreUnavailableError,
} from '@idem/core';
import { type Queryable, runStatement } from './pg-call.js';
import { NOW_MS } from './schema-sql.js';

/** The inspect row: `now`, then the record's columns named as the kit reads them. */
type InspectRow = { now: string; status: RecordStatus | null } & Omit<AdminRecordRead, 'status'>;

// A fence a store writes: a whole number from 0 that a JS number holds exactly (one more
// for a release, which raises it). A row outside it was written by hand: an operator's write
// would carry it on (a release answering a fence the caller cannot use, after the write)
// and is refused instead.
const SANE_FENCE = 'old.fence BETWEEN 0 AND 9007199254740991';
const SANE_TO_RAISE = 'old.fence BETWEEN 0 AND 9007199254740990';
// The execution an operator expects to release or delete ($3 owner, $4 fence; NULL for any).
// The expected owner goes as its UTF-8 bytes: an owner the column cannot hold (U+0000) is
// still a parameter, one that matches no row, rather than an encoding error.
const EXPECTED =
  "($3::bytea IS NULL OR convert_to(old.owner, 'UTF8') = $3::bytea) AND ($4::bigint IS NULL OR old.fence = $4::bigint)";
// The record an operator expects to delete: the execution, and its status ($5; NULL for any).
const EXPECTED_RECORD = `${EXPECTED} AND ($5::text IS NULL OR old.status = $5::text)`;

/** An expectation's owner and fence as statement parameters ($3, $4), NULL for one not given. */
const expecting = (expected: { owner?: string; fence?: number } | undefined) => [
  expected?.owner === undefined ? null : Buffer.from(expected.owner, 'utf8'),
  expected?.fence ?? null,
];

function refuseMalformed(sane: boolean | null | undefined, fence: unknown): void {
  if (sane === false)
    throw new StoreUnavailableError(
      `PostgreSQL row with fence ${String(fence)} (not written by a store, or no fence left below 2^53 to raise): left as it is`,
    );
}

/**
 * The operator actions of a PostgreSQL store, one plain statement each (no function of the
 * schema), decided by the database clock. `forceRelease` takes the row lock and decides on
 * the locked row, so it is atomic with the store's functions; `delete` likewise, leaving a
 * tombstone that keeps the fence (a later acquisition continues above it).
 */
export function createPostgresAdmin(
  pool: Queryable,
  table: string,
  rowKey: (storageKey: string) => string,
  timeoutMs: number,
): StoreAdmin {
  const run = <R extends Record<string, unknown>>(
    operation: string,
    text: string,
    values: unknown[],
  ) => runStatement<R>(pool, operation, { text, values }, timeoutMs);
  return createStoreAdmin({
    checkKey: rowKey,
    async read(key) {
      const { rows } = await run<InspectRow>(
        'inspect',
        `WITH c AS (SELECT ${NOW_MS} AS now)
         SELECT c.now, t.status, t.fingerprint, t.owner, t.fence, t.lease_until AS "leaseUntil",
                t.expires_at AS "expiresAt", octet_length(t.outcome) AS "outcomeBytes"
         FROM c LEFT JOIN ${table} t ON t.key = $1 AND t.expires_at > c.now`,
        [rowKey(key)],
      );
      const { now, status, ...record } = rows[0] as InspectRow;
      return { now, record: status ? { status, ...record } : undefined };
    },
    async forceRelease(key, owner, expected) {
      // `old` is the row as locked (the latest version); the update decides on it, and only
      // on the execution expected ($3 owner, $4 fence; NULL for any). The origin stays for
      // the retry (a row written before origins gets its owner's, which the release replaces).
      const { rows } = await run<{
        status: RecordStatus | null;
        live: boolean | null;
        owner: string | null;
        fence: string | null;
        sane: boolean | null;
        raisable: boolean | null;
        expected: boolean | null;
        old_fence: string | null;
      }>(
        'forceRelease',
        `WITH c AS (SELECT ${NOW_MS} AS now),
         old AS (SELECT key, status, owner, fence, expires_at FROM ${table} WHERE key = $1 FOR UPDATE),
         upd AS (
           UPDATE ${table} t SET status = 'released', owner = $2, fence = t.fence + 1,
                  lease_until = c.now, outcome = NULL, origin = coalesce(t.origin, t.owner)
           FROM old, c
           WHERE t.key = old.key AND old.status = 'in_progress' AND old.expires_at > c.now
             AND ${SANE_TO_RAISE} AND ${EXPECTED}
           RETURNING t.fence)
         SELECT old.status, old.expires_at > c.now AS live, old.owner, (SELECT fence FROM upd) AS fence,
                ${SANE_FENCE} AS sane, ${SANE_TO_RAISE} AS raisable, ${EXPECTED} AS expected,
                old.fence AS old_fence
         FROM c LEFT JOIN old ON true`,
        [rowKey(key), owner, ...expecting(expected)],
      );
      const row = rows[0];
      if (!row?.status || !row.live) return 'not_found';
      if (row.status !== 'in_progress') return 'not_in_progress';
      refuseMalformed(row.sane, row.old_fence);
      if (row.expected === false)
        return { changed: true, owner: row.owner ?? '', fence: row.old_fence ?? '' };
      refuseMalformed(row.raisable, row.old_fence);
      if (row.fence === null)
        throw new StoreUnavailableError('PostgreSQL forceRelease updated no row');
      return { fence: row.fence, previousOwner: row.owner ?? '' };
    },
    async delete(key, owner, expected) {
      // The row stays as a tombstone that holds only the fence: released, expired now (so
      // nothing reads it and the next acquire takes it with fence + 1 and its own token as
      // the origin), an owner no executor holds, no fingerprint, no outcome, no origin.
      // `lease_until` keeps the deleted record's deadline, and `deleteExpired` spares a row
      // until both deadlines passed: the fence is forgotten no earlier than the record's own
      // retention would have let it be. A live row is written only while it holds what the
      // operator expects ($3 owner, $4 fence, $5 status; NULL for any), decided on the locked
      // row; an expired one is cleared as without an expectation.
      const { rows } = await run<{
        live: boolean | null;
        sane: boolean | null;
        expected: boolean | null;
        status: RecordStatus | null;
        owner: string | null;
        old_fence: string | null;
      }>(
        'delete',
        `WITH c AS (SELECT ${NOW_MS} AS now),
         old AS (SELECT key, status, owner, fence, lease_until, expires_at FROM ${table} WHERE key = $1 FOR UPDATE),
         upd AS (
           UPDATE ${table} t SET status = 'released', owner = $2, fingerprint = '', outcome = NULL,
                  origin = NULL,
                  lease_until = greatest(old.lease_until, old.expires_at),
                  expires_at = least(old.expires_at, c.now)
           FROM old, c WHERE t.key = old.key AND ${SANE_FENCE}
             AND (old.expires_at <= c.now OR (${EXPECTED_RECORD})))
         SELECT old.expires_at > c.now AS live, ${SANE_FENCE} AS sane, ${EXPECTED_RECORD} AS expected,
                old.status, old.owner, old.fence AS old_fence
         FROM c LEFT JOIN old ON true`,
        [rowKey(key), owner, ...expecting(expected), expected?.status ?? null],
      );
      const row = rows[0];
      refuseMalformed(row?.sane, row?.old_fence);
      if (row?.live !== true) return false;
      if (row.expected === false && row.status !== null)
        return {
          changed: true,
          status: row.status,
          owner: row.owner ?? '',
          fence: row.old_fence ?? '',
        };
      return true;
    },
  });
}
