import { NOW_MS, schemaObjects } from './schema-sql.js';
import type { TableName } from './table-name.js';

/** How a business transaction takes hold of its record: see {@link holdRecordSql}. */
export interface HoldRecordSql {
  /**
   * For serializable transactions: a statement to send first, in a read committed
   * transaction of its own, that answers the row's tuple id (`tid`), or no row.
   */
  tid?: string;
  /**
   * The statement sent right after `BEGIN`, in the same round trip: the record's row under
   * `FOR UPDATE`, only while it is still in progress under the owner and fence and not
   * expired. One row with a non-null `fence` when the transaction holds the record, and
   * `xid`, the transaction's id (`txid_current()`, assigned by the lock anyway): the
   * completion checks it, so that a transaction the operation ended itself is known.
   */
  lock(tid?: string): string;
}

const TID = /^\(\d+,\d+\)$/;

/**
 * The statements that make a business transaction hold its record from its start.
 *
 * Values are spliced as literals (a simple query of several statements has no parameters):
 * `literal` MUST quote them (node-postgres' `escapeLiteral`); the fence is a safe integer and
 * a tuple id is checked against `(n,n)`.
 *
 * Serializable transactions look the row up by tuple id (`tid` first, outside the
 * transaction) so that the predicate lock they keep until they end covers this row only,
 * not a page of the key's index; other levels look it up by key.
 */
export function holdRecordSql(
  name: TableName,
  record: { key: string; owner: string; fence: number },
  literal: (value: string) => string,
  serializable: boolean,
): HoldRecordSql {
  if (!Number.isSafeInteger(record.fence)) throw new RangeError('fence must be a safe integer');
  const o = schemaObjects(name);
  const key = literal(record.key);
  const owner = literal(record.owner);
  if (!serializable) {
    return {
      lock: () =>
        `SELECT fence, txid_current()::text AS xid FROM ${o.table} WHERE key = ${key} AND owner = ${owner} AND fence = ${record.fence} AND status = 'in_progress' AND expires_at > ${NOW_MS} FOR UPDATE`,
    };
  }
  return {
    tid: `BEGIN ISOLATION LEVEL READ COMMITTED; SELECT ctid::text AS tid FROM ${o.table} WHERE key = ${key} AND owner = ${owner} AND fence = ${record.fence}; COMMIT`,
    lock: (tid) => {
      if (!(tid && TID.test(tid))) throw new RangeError('a tuple id is (block,offset)');
      return `SELECT ${o.hold}('${tid}'::tid, ${key}, ${owner}, ${record.fence}) AS fence, txid_current()::text AS xid`;
    },
  };
}

/** Longest value PostgreSQL takes for a timeout setting, in ms. */
const MAX_SETTING_MS = 2_147_483_647;

/**
 * The transaction's idle limit, sent with the lock: an owner that died without the server
 * noticing (a blackholed network, a frozen process) would otherwise hold the row, and keep
 * every duplicate at 409, until the server's TCP keep-alive gives up (hours by default) or
 * forever. Heartbeats reset it while the owner lives (`BusinessTransaction.heartbeat`).
 */
export function idleLimit(ms: number): string {
  const limit = Math.min(Math.max(1, Math.ceil(ms)), MAX_SETTING_MS);
  return `SET LOCAL idle_in_transaction_session_timeout = ${limit}`;
}
