import type { Queryable } from './pg-call.js';
import { runStatement } from './pg-call.js';

/**
 * How the engine learns whether the business transaction it opened is still the one open on
 * its client, after the operation ran: an operation may have sent `COMMIT`, `ROLLBACK`,
 * `END`, `ABORT`, `COMMIT AND CHAIN` or `PREPARE TRANSACTION` on `tx` (alone or inside a
 * text of several statements), which no parsing of its statements can rule out. The
 * transaction's id (`txid_current()`, read with the record's lock at `BEGIN`) is the marker:
 * a transaction that ended never comes back, and a new one has another id.
 */

const XID = /^[1-9]\d{0,19}$/;

/** node-postgres' status of the last ReadyForQuery ('I', 'T', 'E'), where pg has it. */
export function transactionStatus(client: unknown): string | null | undefined {
  return (client as { getTransactionStatus?: () => string | null }).getTransactionStatus?.();
}

/**
 * Rolls back what is open on `client` and answers whether that was the transaction `xid`
 * (`true`), in one round trip, as the plain `ROLLBACK` it replaces:
 *
 * - in a transaction block, its id is read before the `ROLLBACK`: the same id, or another
 *   (or none: a new transaction that wrote nothing);
 * - in a failed block no statement runs but `ROLLBACK`: the id's status is read after it,
 *   `aborted` when it was this one (just rolled back), `committed` when the operation had
 *   committed it. (Blind spot: an operation that rolled it back itself, wrote in autocommit,
 *   then began a block that failed, reads `aborted` too; the engine rules it out first when
 *   it saw the client idle in between.)
 * - idle: the operation ended it; nothing is sent.
 */
export async function rollbackIfOurs(
  client: Queryable,
  xid: string,
  timeoutMs: number,
): Promise<boolean> {
  if (!XID.test(xid)) throw new RangeError('a transaction id is a positive integer');
  const status = transactionStatus(client);
  if (status === 'I') return false;
  if (status !== 'E') {
    try {
      return await oursIn(
        client,
        `SELECT txid_current_if_assigned() IS NOT DISTINCT FROM ${xid} AS ours; ROLLBACK`,
        timeoutMs,
      );
    } catch (error) {
      // node-postgres may still report 'T' when an operation's statement failed a moment
      // ago (its error can be delivered before the server's ReadyForQuery is read): the
      // block is failed (25P02) and only ROLLBACK runs. Anything else is thrown.
      if (codeOf(error) !== '25P02') throw error;
    }
  }
  return oursIn(client, `ROLLBACK; SELECT txid_status(${xid}) = 'aborted' AS ours`, timeoutMs);
}

function codeOf(error: unknown): unknown {
  const cause = (error as { cause?: { code?: unknown } } | null)?.cause;
  return cause?.code ?? (error as { code?: unknown } | null)?.code;
}

async function oursIn(client: Queryable, text: string, timeoutMs: number): Promise<boolean> {
  const results = (await runStatement(
    client,
    'rollback',
    { text },
    timeoutMs,
  )) as unknown as Array<{
    rows: Array<{ ours?: unknown }>;
  }>;
  return results.some((result) => result.rows?.[0]?.ours === true);
}

/**
 * The status of transaction `xid` read through the pool (`committed`, `aborted`,
 * `in progress`, or null when too old to tell), for a connection that broke. Throws the
 * store's typed error when the pool does not answer.
 */
export async function transactionFate(
  pool: Queryable,
  xid: string,
  timeoutMs: number,
): Promise<string | null> {
  const { rows } = await runStatement<{ status: string | null }>(
    pool,
    'settle',
    { text: 'SELECT txid_status($1::bigint)::text AS status', values: [xid] },
    timeoutMs,
  );
  return rows[0]?.status ?? null;
}
