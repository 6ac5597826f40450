import {
  createIdempotency,
  type ExecuteResult,
  type IdempotencyOptions,
  type IdempotencyStore,
  type IdempotentRequest,
  InvalidInputError,
  type OperationContext,
  type OutcomePolicy,
  type ResolvedSettings,
  successOnly,
} from '@idem/core';
import type { Pool, PoolClient } from 'pg';
import { BusinessTransaction, TransactionNotCommittedError } from './business-transaction.js';
import type { PostgresStore } from './options.js';

/** What a transactional operation receives: core's context plus the open transaction. */
export interface TransactionContext extends OperationContext {
  /**
   * The client of the business transaction (`BEGIN` already sent). Run the business writes
   * on it; the engine completes the idempotency record on it and commits. Never send
   * `COMMIT` or `ROLLBACK` on it yourself, and never use it after the operation returned.
   */
  tx: PoolClient;
}

/** Isolation level of the business transaction. */
export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable';

/** Options of {@link createPostgresIdempotency}: core's options, with a Postgres store. */
export interface PostgresIdempotencyOptions<T> extends Omit<IdempotencyOptions<T>, 'store'> {
  /** The store; its `pool` MUST be a `pg.Pool` (the transaction gets a connection of its own). */
  store: PostgresStore;
  /** Isolation level of the business transaction. @default 'read committed' */
  isolationLevel?: IsolationLevel;
}

/** The engine of {@link createPostgresIdempotency}. */
export interface PostgresIdempotency<T> {
  /**
   * Acquires the key outside any transaction (so a concurrent duplicate gets `IN_PROGRESS`
   * or waits, and a completed key replays, exactly as with core's engine), then opens a
   * transaction on a connection of the pool, runs `operation` with it, records the outcome
   * in that same transaction and commits once: the business writes and the record commit
   * together or not at all.
   *
   * - The operation returns: the outcome (if final) is completed inside the transaction,
   *   then `COMMIT`. The answer is the value, or a replay for every later call.
   * - The operation throws: the transaction is rolled back; the error is then final or not
   *   by the outcome policy, as in core (a final failure is recorded on its own, with no
   *   business rows, since they rolled back).
   * - The lease was taken over meanwhile: the completion finds another owner, the
   *   transaction is rolled back, `LeaseLostError`.
   * - The transaction could not start or did not commit (a connection killed, a timeout, a
   *   serialization failure at commit): nothing was recorded, the key is released,
   *   `TransactionNotCommittedError` (code `STORE_UNAVAILABLE`). When the connection died
   *   during `COMMIT`, the record tells whether it committed: if it did, the call succeeds.
   *
   * @throws everything core's `execute` throws, and `TransactionNotCommittedError`
   */
  execute(
    request: IdempotentRequest,
    operation: (ctx: TransactionContext) => Promise<T>,
  ): Promise<ExecuteResult<T>>;
  /** Waits for final writes still being retried in the background (as core's `drain`). */
  drain(timeoutMs?: number): Promise<number>;
  /** The options in force, defaults filled in. */
  readonly settings: ResolvedSettings;
}

const BEGIN: Record<IsolationLevel, string> = {
  'read committed': 'BEGIN ISOLATION LEVEL READ COMMITTED',
  'repeatable read': 'BEGIN ISOLATION LEVEL REPEATABLE READ',
  serializable: 'BEGIN ISOLATION LEVEL SERIALIZABLE',
};

/** Acquisitions whose operation has not started yet; bounded (a late acquire never runs one). */
const MAX_WAITING_OWNERS = 10_000;

const id = (key: string, part: string | number) => `${key}\0${part}`;

function isPool(pool: unknown): pool is Pool {
  const candidate = pool as { connect?: unknown; totalCount?: unknown } | null;
  return typeof candidate?.connect === 'function' && typeof candidate.totalCount === 'number';
}

/**
 * Core's engine bound to a Postgres store, whose operations run inside a business
 * transaction that also records their outcome (see {@link PostgresIdempotency.execute}).
 *
 * What it guarantees, beyond core's guarantees: for writes made through `ctx.tx`, exactly
 * once, without fences. The record is completed only by the transaction that holds the
 * business writes, under the record's row lock and owner check, so "written but not
 * recorded" and "recorded but not written" cannot happen, whatever is killed when; an
 * execution that lost its lease rolls its writes back. What it does not guarantee: effects
 * outside this database (an e-mail, a call to a payment API, a write through another
 * connection) are not part of the transaction; they can happen twice if a transaction
 * aborts after them, so guard them with `ctx.fence` as with core's engine.
 */
export function createPostgresIdempotency<T = unknown>(
  options: PostgresIdempotencyOptions<T>,
): PostgresIdempotency<T> {
  const { store, isolationLevel = 'read committed', ...rest } = options;
  if (typeof store?.completeIn !== 'function')
    throw new InvalidInputError('createPostgresIdempotency needs a store from createPostgresStore');
  const given: unknown = store.pool;
  if (!isPool(given))
    throw new InvalidInputError(
      'createPostgresIdempotency needs a store built on a pg Pool: the transaction takes a connection of its own',
    );
  const pool: Pool = given;
  const begin = BEGIN[isolationLevel];
  if (!begin)
    throw new InvalidInputError(
      "isolationLevel must be 'read committed', 'repeatable read' or 'serializable'",
    );

  // Which owner holds (storage key, fence): the operation learns the owner from it.
  const owners = new Map<string, string>();
  const fenceOf = new Map<string, string>();
  // Open business transactions, by storage key and owner.
  const open = new Map<string, BusinessTransaction>();

  function rememberOwner(key: string, fence: number, owner: string): void {
    if (owners.size >= MAX_WAITING_OWNERS) {
      const oldest = owners.keys().next().value as string;
      fenceOf.delete(id(oldest.split('\0')[0]!, owners.get(oldest)!));
      owners.delete(oldest);
    }
    owners.set(id(key, fence), owner);
    fenceOf.set(id(key, owner), id(key, fence));
  }

  function forgetOwner(key: string, owner: string): void {
    const fenceId = fenceOf.get(id(key, owner));
    if (fenceId !== undefined) owners.delete(fenceId);
    fenceOf.delete(id(key, owner));
  }

  const transactional: IdempotencyStore = {
    capabilities: store.capabilities,
    async acquire(input) {
      const result = await store.acquire(input);
      if (result.kind === 'acquired') rememberOwner(input.key, result.fence, input.owner);
      return result;
    },
    complete(input) {
      const tx = open.get(id(input.key, input.owner));
      return tx ? tx.complete(input) : store.complete(input);
    },
    async release(input) {
      forgetOwner(input.key, input.owner);
      await open.get(id(input.key, input.owner))?.rollback();
      return store.release(input);
    },
    extend: (input) => store.extend(input),
    get: (key) => store.get(key),
  };

  // Transactions still settling when core gave their completion up (max hold passed
  // during a long outage): nothing will ask for them again.
  const byFence = new Map<string, string>();
  const listener = rest.onEvent;
  const policy = (rest.isFinal ?? successOnly) as OutcomePolicy<T>;
  const idem = createIdempotency<T>({
    ...rest,
    store: transactional,
    onEvent: (event) => {
      if (event.type === 'completion_abandoned') {
        const fenceKey = id(event.storageKey, event.fence);
        const openKey = byFence.get(fenceKey);
        if (openKey !== undefined) open.delete(openKey);
        byFence.delete(fenceKey);
      }
      return listener?.(event);
    },
    // A transaction that could not start is never an outcome: the key goes back.
    isFinal: (settled) =>
      !settled.ok && settled.error instanceof TransactionNotCommittedError
        ? false
        : policy(settled),
  });
  const { retentionMs } = idem.settings;
  const connectMs = store.statementTimeoutMs;

  /** A pool connection within the store's statement time limit; a late one goes back. */
  function connect(): Promise<PoolClient> {
    return new Promise<PoolClient>((resolve, reject) => {
      let late = false;
      const timer = setTimeout(() => {
        late = true;
        reject(
          new TransactionNotCommittedError(
            `No pool connection for the business transaction within ${connectMs} ms`,
          ),
        );
      }, connectMs);
      pool.connect().then(
        (client) => {
          if (late) client.release();
          else {
            clearTimeout(timer);
            resolve(client);
          }
        },
        (error: unknown) => {
          clearTimeout(timer);
          reject(
            new TransactionNotCommittedError('Could not connect for the business transaction', {
              cause: error,
            }),
          );
        },
      );
    });
  }

  async function execute(
    request: IdempotentRequest,
    operation: (ctx: TransactionContext) => Promise<T>,
  ): Promise<ExecuteResult<T>> {
    if (typeof operation !== 'function')
      throw new InvalidInputError('execute needs an operation function');
    let tx: BusinessTransaction | undefined;
    try {
      return await idem.execute(request, async (ctx) => {
        const owner = owners.get(id(ctx.storageKey, ctx.fence));
        if (owner === undefined)
          throw new TransactionNotCommittedError('No acquisition is known for this execution');
        forgetOwner(ctx.storageKey, owner);
        const client = await connect();
        const key = id(ctx.storageKey, owner);
        const current = new BusinessTransaction(
          store,
          client,
          ctx.storageKey,
          owner,
          retentionMs,
          () => {
            open.delete(key);
            byFence.delete(id(ctx.storageKey, ctx.fence));
          },
        );
        byFence.set(id(ctx.storageKey, ctx.fence), key);
        tx = current;
        await current.begin(begin);
        open.set(key, current);
        try {
          return await operation({
            fence: ctx.fence,
            storageKey: ctx.storageKey,
            get signal() {
              return ctx.signal;
            },
            tx: client,
          });
        } catch (error) {
          await current.rollback();
          throw error;
        }
      });
    } finally {
      // Still open: core never wrote an outcome (the outcome policy threw). Nothing commits;
      // core left the key to its lease.
      if (tx?.phase === 'open') await tx.rollback();
    }
  }

  return {
    execute,
    drain: (timeoutMs) => idem.drain(timeoutMs),
    settings: idem.settings,
  };
}
