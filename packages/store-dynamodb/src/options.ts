import type { AttributeValue, DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Clock, IdempotencyStore, StoreAdmin } from '@idem/core';
import type { RecordAttributeNames } from './record-item.js';
import type { EnsureTableOptions, EnsureTableResult } from './table.js';

/** Options of `createDynamoDbStore`. Durations are milliseconds. */
export interface DynamoDbStoreOptions {
  /** A client the caller built and owns (region, credentials, retries). The store never closes it. */
  client: DynamoDBClient;
  /** Name of the table (see `ensureTable()` or the README for its schema). */
  tableName: string;
  /** Prepended to every storage key, e.g. to share a table between services. @default '' */
  keyPrefix?: string;
  /** Name of the partition key attribute (type `S`). @default 'pk' */
  partitionKey?: string;
  /**
   * Single-table layout: every record goes under one static partition key value, with the
   * (prefixed) storage key in the sort key attribute (type `S`). Without it, the storage key
   * is the whole primary key. @default undefined
   */
  singleTable?: {
    /** The static partition key value of every record, e.g. `'IDEM'`. */
    partitionKeyValue: string;
    /** Name of the sort key attribute. @default 'sk' */
    sortKey?: string;
  };
  /** Names of the record's attributes; unset ones keep their defaults. */
  attributes?: Partial<RecordAttributeNames>;
  /**
   * Clock that decides expiry: DynamoDB has no server clock usable in a condition, so every
   * condition compares with this clock's `now`. Keep your servers' clocks in sync (NTP).
   * With the default, a renewal after the clock stepped back counts from elapsed time since
   * the lease's last write (README "Clock"); an injected clock is taken as given (only a
   * reading earlier than at that write counts as a step): leave it unset in production.
   * @default systemClock
   */
  clock?: Clock;
  /**
   * Outcomes of at least this many bytes are gzip-compressed (kept compressed only when that
   * is smaller); `false` stores every outcome as is. Capacity is billed per KB written and
   * read, so compression saves money as well as room. With compression on, an outcome too
   * large to fit as is is always compressed. @default 4096
   */
  compressAboveBytes?: number | false;
  /**
   * Largest encoded outcome accepted at all, before compression, in bytes (the store's
   * `capabilities.maxOutcomeBytes`); larger ones are refused at once. Below it, what counts
   * is the item limit: DynamoDB items hold at most 400 KB, so an outcome that still exceeds
   * its budget (about 398 KiB) after compression is refused with `OutcomeTooLargeError`
   * before anything is written.
   * @default 4 MiB with compression, the uncompressed item budget without
   */
  maxOutcomeBytes?: number;
  /**
   * Longest one request of a store call (a GetItem, PutItem or UpdateItem, the client's own
   * retries included) may take, in ms: past it the request is aborted (an `AbortSignal` given
   * to `client.send`) and the call fails with `StoreUnavailableError`, whatever the client's
   * timeouts. The client's `requestTimeout` ends only the wait for the response's head, and
   * its `socketTimeout` only a silence: an endpoint that trickles the body in, a byte at a
   * time, is cut only here. A positive integer, at most 2_147_483_647. @default 5_000 (core's
   * default `storeTimeoutMs`)
   */
  requestDeadlineMs?: number;
}

/** A DynamoDB-backed store; see `createDynamoDbStore`. */
export interface DynamoDbStore extends IdempotencyStore {
  /** The table this store writes to. */
  readonly tableName: string;
  /**
   * Creates the table when it is missing (on-demand billing) and enables TTL on the `ttl`
   * attribute; checks the key schema of an existing table. Never called by the factory.
   */
  ensureTable(options?: EnsureTableOptions): Promise<EnsureTableResult>;
  /** Primary key of the item that holds `storageKey`, for raw reads and operations tooling. */
  itemKey(storageKey: string): Record<string, AttributeValue>;
  /** Operator actions; `delete` removes the item, fence included. */
  readonly admin: StoreAdmin;
}
