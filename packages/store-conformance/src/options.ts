import type { Clock, IdempotencyStore, StoreClock, StoredRecord } from '@idem/core';

/** What the suite hands `createStore` for each test. */
export interface ConformanceContext {
  /**
   * The clock the store must decide expiry by when `clock` is `'injectable'` (the suite
   * moves it forward to pass leases and retention). Ignored by server-clock stores.
   */
  clock: Clock;
  /** A fresh random prefix: use it as the key prefix (or table suffix) so tests never meet. */
  prefix: string;
}

/** Options of `describeStoreConformance`. */
export interface ConformanceOptions {
  /** Creates a fresh store for one test. Called once per test (and once per property run). */
  createStore(ctx: ConformanceContext): IdempotencyStore | Promise<IdempotencyStore>;
  /** Cleans up after a store (delete its keys, close timers). Never close the shared client here unless you created it in createStore. */
  destroyStore?(store: IdempotencyStore): Promise<void> | void;
  /**
   * Whose clock the store decides expiry by: the same name and values as the store's
   * `capabilities.clock` (core's `StoreClock`), and the suite checks that they agree.
   * `'injectable'`: the store decides expiry by `ctx.clock`, and the suite moves that clock.
   * `'server'`: the store uses its own server clock; the suite uses short real leases
   * (`leaseMs`) and real sleeps.
   */
  clock: StoreClock;
  /** Lease used by tests when `clock` is `'server'`, in ms. @default 250 */
  leaseMs?: number;
  /**
   * A second channel to read what was persisted, bypassing the adapter's own read path
   * (a raw client GET, a raw GetItem). Decodes to the contract's record shape. When given,
   * the suite checks writes through it as well as through `store.get`.
   */
  rawRead?(store: IdempotencyStore, storageKey: string): Promise<StoredRecord | undefined>;
  /**
   * For a bounded store (one that holds at most so many records, as the memory store's
   * `maxEntries`): the number of records a store made by `createStore` holds. Create it small
   * (a few dozen records): the capacity check completes `capacity + 4` keys and expects every
   * completed one still replayed and the acquire of a new key, once full, refused with
   * `StoreFullError` (contract 8). Without it, the check completes 24 keys and expects every
   * one replayed (or a `StoreFullError`, which it accepts).
   */
  capacity?: number;
  /**
   * For a store whose records live in a service that several processes share (Redis,
   * PostgreSQL, DynamoDB): `createStore`, called again with the same context, makes another
   * instance onto the same records, as the adapter in another process would. The suite then
   * checks that such instances see each other's writes and races its concurrency checks across
   * 4 of them, so a store that is atomic only within one instance (a lock held in the process
   * around a read and a write) fails. `false` for a store that lives in one process (the
   * memory store): its concurrency checks then race on one instance. Left unset, each check
   * that races finds out: when another instance made alike sees a record this one acquired,
   * it races across 4 instances (and every one must see it), else on one. Set it: `true`
   * also fails a shared store whose instances do not see each other's records.
   * @default found out per check, as above
   */
  sharedBackend?: boolean;
  /**
   * Runs per property. @default `IDEM_PROPERTY_RUNS`, else 200 when `CI` is set, else 25
   */
  numRuns?: number;
  /** Per-test timeout in ms. @default 60_000 */
  timeoutMs?: number;
}
