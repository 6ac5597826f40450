import { StoreUnavailableError } from '@idem/core';
import type { Queryable } from '@idem/store-postgres';
import {
  type BillResult,
  type Ledger,
  type LedgerEntry,
  StaleFenceError,
  type StatName,
  zeroStats,
} from './ledger.js';

/** The ledger's tables (in the same database as the idempotency records). */
export const LEDGER_TABLE = 'llm_api_ledger';
export const STATS_TABLE = 'llm_api_stats';

/** Creates the ledger's tables when missing; safe to run again. */
export const LEDGER_SCHEMA = `
CREATE TABLE IF NOT EXISTS ${LEDGER_TABLE} (
  message_id text COLLATE "C" PRIMARY KEY, -- IDEM_KEY_PREFIX + the message id
  fence      bigint NOT NULL,
  billed_at  bigint NOT NULL,
  entry      jsonb  NOT NULL
);
CREATE TABLE IF NOT EXISTS ${STATS_TABLE} (
  name text COLLATE "C" PRIMARY KEY, -- IDEM_KEY_PREFIX + the counter's name
  n    bigint NOT NULL
);`;

// One statement: insert, or replace a lower fence; answers what it did and the fence found.
const BILL_SQL = `
WITH written AS (
  INSERT INTO ${LEDGER_TABLE} AS l (message_id, fence, billed_at, entry) VALUES ($1, $2, $3, $4)
  ON CONFLICT (message_id) DO UPDATE SET fence = EXCLUDED.fence, billed_at = EXCLUDED.billed_at,
    entry = EXCLUDED.entry
  WHERE l.fence < EXCLUDED.fence
  RETURNING (xmax = 0) AS inserted
)
SELECT (SELECT inserted FROM written) AS inserted,
       (SELECT fence FROM ${LEDGER_TABLE} WHERE message_id = $1) AS current`;

/** Most bills staged at once (executions between their bill and their completion). */
const MAX_STAGED = 10_000;

/**
 * How long a staged bill may wait for its completion: twice core's `maxHoldMs` (1 hour, the
 * app's), past which an execution can no longer write its outcome (core gives up the final
 * write at its acquisition plus `maxHoldMs`, and a bill is staged after the acquisition), so
 * a bill staged longer ago belongs to an execution that ended without completing (its
 * process lost the store for good, or its lease was lost and nobody billed the key since).
 */
const STAGED_FOR_MS = 2 * 3_600_000;

/** Options of {@link createPostgresLedger} (tests). */
export interface PostgresLedgerOptions {
  /** @default 10_000 */
  maxStaged?: number;
  /** @default 7_200_000 */
  stagedForMs?: number;
  /** Milliseconds of a monotonic clock. @default performance.now */
  now?: () => number;
}

/**
 * The token ledger in PostgreSQL, billed **in the same transaction as the completion** of
 * the request's idempotency record.
 *
 * A keyed request's bill (fence >= 1) is not written when the model finishes: it is staged
 * in this process, and written by the transaction that completes the request's record (see
 * {@link completingWithBills}): the answer is recorded and billed together, or neither. An
 * execution that loses its lease cannot complete, so its bill never lands; a released
 * execution's bill is dropped, and its retry bills. A request without a key (fence 0) has
 * no record: its bill is written at once. Counters are plain upserts.
 */
export interface PostgresLedger extends Ledger {
  /** The staged bill of the execution completing `storageKey`, if any. */
  staged(storageKey: string): LedgerEntry | undefined;
  /** Forgets a staged bill (written, or its execution gave the key up). */
  unstage(storageKey: string, entry?: LedgerEntry): void;
  /** Writes `entry` through `client` (inside the completion's transaction). */
  billOn(client: Queryable, entry: LedgerEntry): Promise<BillResult>;
}

export function createPostgresLedger(
  pool: Queryable,
  prefix: string,
  options: PostgresLedgerOptions = {},
): PostgresLedger {
  const maxStaged = options.maxStaged ?? MAX_STAGED;
  const stagedForMs = options.stagedForMs ?? STAGED_FOR_MS;
  const now = options.now ?? (() => performance.now());
  // By the storage key of the request's record (where its completion finds it); oldest
  // first: a bill staged again (a takeover's) moves to the end.
  const pending = new Map<string, { entry: LedgerEntry; at: number }>();
  const dropDead = () => {
    const before = now() - stagedForMs;
    for (const [key, { at }] of pending) {
      if (at > before) break;
      pending.delete(key);
    }
  };

  async function billOn(client: Queryable, entry: LedgerEntry): Promise<BillResult> {
    const { rows } = await client.query<{ inserted: boolean | null; current: string | null }>({
      text: BILL_SQL,
      values: [`${prefix}${entry.messageId}`, entry.fence, entry.billedAt, JSON.stringify(entry)],
    });
    const { inserted, current } = rows[0] ?? { inserted: null, current: null };
    if (inserted === true) return 'billed';
    if (inserted === false) return 'replaced';
    if (current !== null && Number(current) > entry.fence)
      throw new StaleFenceError(entry.messageId, entry.fence, Number(current));
    return 'duplicate';
  }

  return {
    billOn,
    staged: (storageKey) => pending.get(storageKey)?.entry,
    unstage(storageKey, entry) {
      if (entry === undefined || pending.get(storageKey)?.entry === entry)
        pending.delete(storageKey);
    },

    async bill(entry, recordKey) {
      if (entry.fence === 0) return billOn(pool, entry);
      // A keyed bill without its record's key (a caller outside the app's metering) is
      // staged by its message id: no completion finds it, and it ages out.
      const key = recordKey ?? entry.messageId;
      const staged = pending.get(key);
      const found = staged?.entry;
      const current = found?.messageId === entry.messageId ? found : undefined;
      if (current && current.fence > entry.fence)
        throw new StaleFenceError(entry.messageId, entry.fence, current.fence);
      // A bill staged for another message under this record's key belongs to another logical
      // request (the key used again after its retention). The record's fence keeps growing
      // across them (its row expires in place), so the one with the lower fence is the
      // earlier request's, whose execution can no longer complete: a lower-fenced bill arriving
      // late (a retry of it) is stale and never takes the later request's slot, which its
      // completion needs; the later request's bill takes the earlier one's. A bill staged
      // longer ago than an execution can complete is dead and gives its slot up to any.
      if (
        staged &&
        found &&
        !current &&
        found.fence > entry.fence &&
        staged.at > now() - stagedForMs
      )
        throw new StaleFenceError(entry.messageId, entry.fence, found.fence);
      if (current && current.fence === entry.fence) return 'duplicate';
      // Bounded, and never by dropping a live bill: its execution would then complete
      // unbilled (`completingWithBills` completes a record with no staged bill as it is).
      // Bills of executions that can no longer complete go first; while every slot holds a
      // live one, a new bill waits like a bill during a store outage (a transient store
      // failure: `billPersistently` retries it, the client hears 503 after the lease, the
      // backlog stops new model runs), until completions make room.
      if (!found) {
        dropDead();
        if (pending.size >= maxStaged)
          throw new StoreUnavailableError(
            `the ledger holds ${pending.size} bills waiting for their completion (at most ${maxStaged}): this one waits for room`,
            { unsent: true },
          );
      }
      pending.delete(key);
      pending.set(key, { entry: { ...entry }, at: now() });
      return current ? 'replaced' : 'billed';
    },

    async entries() {
      const { rows } = await pool.query<{ entry: LedgerEntry }>({
        text: `SELECT entry FROM ${LEDGER_TABLE} WHERE starts_with(message_id, $1) ORDER BY billed_at`,
        values: [prefix],
      });
      return rows.map((r) => r.entry);
    },

    // Summed and paged by the database: the app reads `limit` rows, never the whole ledger.
    async usage(limit: number) {
      const [totals, recent] = await Promise.all([
        pool.query<{ messages: string; prompt: string; completion: string; total: string }>({
          text: `SELECT count(*) AS messages,
                   coalesce(sum((entry->>'promptTokens')::bigint), 0) AS prompt,
                   coalesce(sum((entry->>'completionTokens')::bigint), 0) AS completion,
                   coalesce(sum((entry->>'totalTokens')::bigint), 0) AS total
                 FROM ${LEDGER_TABLE} WHERE starts_with(message_id, $1)`,
          values: [prefix],
        }),
        pool.query<{ entry: LedgerEntry }>({
          text: `SELECT entry FROM ${LEDGER_TABLE} WHERE starts_with(message_id, $1) ORDER BY billed_at DESC LIMIT $2`,
          values: [prefix, limit],
        }),
      ]);
      const row = totals.rows[0];
      return {
        recent: recent.rows.map((r) => r.entry).reverse(),
        totals: {
          messages: Number(row?.messages ?? 0),
          prompt_tokens: Number(row?.prompt ?? 0),
          completion_tokens: Number(row?.completion ?? 0),
          total_tokens: Number(row?.total ?? 0),
        },
      };
    },

    async count(name: StatName) {
      await pool.query({
        text: `INSERT INTO ${STATS_TABLE} AS s (name, n) VALUES ($1, 1) ON CONFLICT (name) DO UPDATE SET n = s.n + 1`,
        values: [`${prefix}${name}`],
      });
    },

    async stats() {
      const { rows } = await pool.query<{ name: string; n: string }>({
        text: `SELECT name, n FROM ${STATS_TABLE} WHERE starts_with(name, $1)`,
        values: [prefix],
      });
      const stats = zeroStats();
      for (const row of rows) {
        const name = row.name.slice(prefix.length) as StatName;
        if (name in stats) stats[name] = Number(row.n);
      }
      return stats;
    },
  };
}
