import type { IdempotencyStore, OwnerWriteResult } from '@idem/core';
import {
  createPostgresStore,
  type PostgresStore,
  recommendedPoolConfig,
} from '@idem/store-postgres';
import pg from 'pg';
import type { Backend } from '../backend.js';
import { boundLedger } from '../ledger/bounded-ledger.js';
import type { LedgerEntry } from '../ledger/ledger.js';
import {
  createPostgresLedger,
  LEDGER_SCHEMA,
  type PostgresLedger,
} from '../ledger/postgres-ledger.js';
import { callWithin } from './bounded-call.js';

/** The records table in the database (the ledger's tables sit beside it). */
export const RECORDS_TABLE = 'llm_api_idem_records';

/**
 * The store with every keyed completion written in one transaction with its staged bill
 * (see `PostgresLedger`): `BEGIN`, the owner-checked completion, the bill, `COMMIT`. When
 * the transaction fails or its `COMMIT` answer is lost, the error is a
 * `StoreUnavailableError` and core repeats the completion: the repeat is a new transaction
 * whose completion is recognised as the same call if the first one committed (same owner,
 * same bytes) and whose bill is then a duplicate (same fence), so retrying is always safe.
 */
export function completingWithBills(
  store: PostgresStore,
  pool: pg.Pool,
  ledger: PostgresLedger,
): IdempotencyStore {
  /**
   * This execution lost the key: the bill staged for it is dead unless it is the new owner's
   * (a takeover in this process stages its own, with the record's fence). A dead one would
   * hold a slot until it ages out (two hours): after a takeover by another process nothing
   * else replaces it. Best effort: a failed read leaves it to age out.
   */
  async function dropBillOfLostKey(key: string, bill: LedgerEntry): Promise<void> {
    try {
      const record = await store.get(key);
      if (!record || record.fence > bill.fence) ledger.unstage(key, bill);
    } catch {
      // the store away: the bill ages out
    }
  }
  return {
    capabilities: store.capabilities,
    acquire: (input) => store.acquire(input),
    extend: (input) => store.extend(input),
    get: (key) => store.get(key),
    async release(input) {
      // Only the bill staged when the release was sent: its answer may come after the key was
      // taken again in this process (a retry once the release committed) and the new owner
      // staged its own bill, which must stay for its completion.
      const bill = ledger.staged(input.key);
      const result = await store.release(input);
      if (result.ok && bill) ledger.unstage(input.key, bill);
      return result;
    },
    async complete(input): Promise<OwnerWriteResult> {
      const bill = ledger.staged(input.key);
      if (!bill) return store.complete(input);
      const client = await pool.connect();
      let failure: Error | undefined;
      // A checked-out client has no listener of the pool's: a connection that breaks here
      // (the server killed, the network reset) emits 'error' on it, and an 'error' with no
      // listener ends the process. The failed query rejects on its own; keep the first error.
      const onError = (error: Error) => {
        failure ??= error;
      };
      client.on('error', onError);
      let written: OwnerWriteResult;
      try {
        await client.query('BEGIN');
        written = await store.completeIn(client, input);
        if (!written.ok) {
          // Another execution owns the key: its own completion carries its own bill.
          await client.query('ROLLBACK');
        } else {
          await ledger.billOn(client, bill);
          await client.query('COMMIT');
          ledger.unstage(input.key, bill);
          return written;
        }
      } catch (error) {
        failure = error instanceof Error ? error : new Error(String(error));
        throw error;
      } finally {
        client.removeListener('error', onError);
        // A connection whose transaction failed is dropped: it ends on the server.
        client.release(failure);
      }
      await dropBillOfLostKey(input.key, bill);
      return written;
    },
  };
}

/** Options of {@link openPostgresBackend}. */
export interface PostgresBackendOptions {
  /**
   * How often expired records are deleted (`store.deleteExpired`, records whose retention
   * passed more than a day ago). Unlike Redis and DynamoDB, PostgreSQL deletes nothing by
   * itself: without this the records table only grows. @default 60_000
   */
  cleanupEveryMs?: number;
}

/** Most `deleteExpired` statements one cleanup round sends (1,000 rows each). */
const CLEANUP_BATCHES = 10;

/**
 * Opens the PostgreSQL backend: a pool with bounded calls (`recommendedPoolConfig`), the
 * records table (`ensureSchema`) and the ledger's tables, checked at start; the ledger
 * billed in the completion's transaction; expired records deleted every `cleanupEveryMs`.
 * The pool replaces broken connections for the life of the process.
 */
export async function openPostgresBackend(
  url: string,
  prefix: string,
  timeoutMs: number,
  options: PostgresBackendOptions = {},
): Promise<Backend> {
  const pool = new pg.Pool({
    connectionString: url,
    ...recommendedPoolConfig({ statementTimeoutMs: timeoutMs }),
    application_name: 'llm-api',
  });
  // An idle connection that broke is reported here; the pool replaces it.
  pool.on('error', () => undefined);
  const store = createPostgresStore({
    pool,
    table: RECORDS_TABLE,
    keyPrefix: `${prefix}idem:`,
    statementTimeoutMs: timeoutMs,
  });
  try {
    await store.ensureSchema();
    await callWithin('ledger schema', Math.max(timeoutMs, 30_000), () => pool.query(LEDGER_SCHEMA));
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw error;
  }
  const ledger = createPostgresLedger(pool, prefix);
  // One round at a time, at most CLEANUP_BATCHES statements; a failed round (the database
  // away) is left to the next one. The timer does not keep the process alive.
  let cleaning: Promise<void> | undefined;
  const cleanup = setInterval(() => {
    if (cleaning) return;
    cleaning = (async () => {
      for (let i = 0; i < CLEANUP_BATCHES; i++)
        if ((await store.deleteExpired({ limit: 1_000 })) < 1_000) break;
    })()
      .catch(() => undefined)
      .finally(() => {
        cleaning = undefined;
      });
  }, options.cleanupEveryMs ?? 60_000);
  cleanup.unref();
  return {
    kind: 'postgres',
    store: completingWithBills(store, pool, ledger),
    ledger: boundLedger(ledger, timeoutMs),
    ping: async () => {
      await callWithin('ping', timeoutMs, () => pool.query('SELECT 1'));
    },
    close: async () => {
      clearInterval(cleanup);
      await cleaning;
      await pool.end().catch(() => undefined);
    },
  };
}
