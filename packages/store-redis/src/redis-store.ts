import {
  type AcquireInput,
  type AcquireResult,
  type CompleteInput,
  type ExtendInput,
  IdemError,
  type IdempotencyStore,
  InvalidInputError,
  OutcomeTooLargeError,
  type OwnerWriteResult,
  type RecordStatus,
  type ReleaseInput,
  type StoreCapabilities,
  type StoredRecord,
  StoreUnavailableError,
} from '@idem/core';
import type { Cluster, Redis } from 'ioredis';
import { ACQUIRE_LUA, COMPLETE_LUA, EXTEND_LUA, GET_LUA, RELEASE_LUA } from './scripts.js';

/** Options of {@link createRedisStore}. Durations are milliseconds. */
export interface RedisStoreOptions {
  /**
   * An ioredis client the caller built and owns: a standalone `Redis` (also one that talks
   * to a Sentinel-managed primary) or a `Cluster`. The store opens no connection and never
   * closes it.
   */
  client: Redis | Cluster;
  /**
   * Prepended to every storage key. On a Cluster keep hash tags (`{...}`) out of it: a tag
   * would pin every record to one slot, and so to one shard.
   * @default 'idem:'
   */
  keyPrefix?: string;
  /**
   * Largest encoded outcome accepted, in bytes; a larger one fails with
   * `OutcomeTooLargeError` before anything is sent. Redis itself refuses any argument
   * above `proto-max-bulk-len` (512 MiB by default).
   * @default 536_870_912 (512 MiB)
   */
  maxOutcomeBytes?: number;
}

/** A Redis-backed store; see {@link createRedisStore}. */
export interface RedisStore extends IdempotencyStore {
  /** The Redis key that holds the record of `storageKey` (`keyPrefix + storageKey`). */
  redisKey(storageKey: string): string;
}

type Reply = Buffer | number | null | Reply[];

/** The commands `defineCommand` adds; the `Buffer` variants keep outcome bytes binary. */
interface ScriptedClient {
  idemAcquireV1Buffer(
    key: string,
    fp: string,
    owner: string,
    lease: string,
    retention: string,
  ): Promise<Reply[]>;
  idemCompleteV1(key: string, owner: string, retention: string, outcome: Buffer): Promise<number>;
  idemReleaseV1(key: string, owner: string, retention: string): Promise<number>;
  idemExtendV1(key: string, owner: string, lease: string, retention: string): Promise<number>;
  idemGetV1Buffer(key: string): Promise<Reply[] | null>;
}

const SCRIPTS = {
  idemAcquireV1: ACQUIRE_LUA,
  idemCompleteV1: COMPLETE_LUA,
  idemReleaseV1: RELEASE_LUA,
  idemExtendV1: EXTEND_LUA,
  idemGetV1: GET_LUA,
} as const;

const DEFAULT_MAX_OUTCOME_BYTES = 512 * 1024 * 1024;
const STATUSES: ReadonlySet<string> = new Set<RecordStatus>([
  'in_progress',
  'completed',
  'released',
]);
const NOT_OWNER: OwnerWriteResult = { ok: false, reason: 'not_owner' };

function defineScripts(client: Redis | Cluster): ScriptedClient {
  const target = client as unknown as Record<string, unknown>;
  for (const [name, lua] of Object.entries(SCRIPTS)) {
    // Names carry a version so that two releases sharing one client never mix scripts.
    if (typeof target[name] !== 'function') client.defineCommand(name, { numberOfKeys: 1, lua });
  }
  return client as unknown as ScriptedClient;
}

function duration(name: string, value: number): string {
  if (!(Number.isFinite(value) && value >= 0)) {
    throw new InvalidInputError(`${name} must be a finite, non-negative number of ms`);
  }
  return String(Math.ceil(value));
}

function text(value: Reply | undefined): string {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'number') return String(value);
  throw new StoreUnavailableError(`Redis returned a malformed record field: ${String(value)}`);
}

function integer(value: Reply | undefined): number {
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

/** Decodes `{s, fp, o, f, lu, ex[, out]}` as written by the scripts. */
function toRecord(fields: Reply[]): StoredRecord {
  const status = text(fields[0]);
  if (!STATUSES.has(status))
    throw new StoreUnavailableError(`Redis record has an unknown status: ${status}`);
  const record: StoredRecord = {
    status: status as RecordStatus,
    fingerprint: text(fields[1]),
    owner: text(fields[2]),
    fence: integer(fields[3]),
    leaseUntil: integer(fields[4]),
    expiresAt: integer(fields[5]),
  };
  const outcome = fields[6];
  if (status === 'completed') {
    if (!Buffer.isBuffer(outcome))
      throw new StoreUnavailableError('Redis returned a completed record without an outcome');
    record.outcome = bytes(outcome);
  }
  return record;
}

async function call<T>(operation: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof IdemError) throw error;
    const message = error instanceof Error ? error.message : String(error);
    throw new StoreUnavailableError(`Redis ${operation} failed: ${message}`, { cause: error });
  }
}

/**
 * Creates an idempotency store on Redis through an ioredis client the caller owns.
 *
 * Each operation is one Lua script on one key, registered with ioredis's `defineCommand`
 * (EVALSHA, reloaded automatically after a `SCRIPT FLUSH` or failover), so each is atomic
 * and costs one round trip. Expiry is decided by Redis's `TIME` inside each script
 * (`capabilities.clock = 'server'`): client clock skew can neither extend nor cut a lease.
 * Every key carries a `PEXPIREAT` at the record's retention deadline, so Redis frees the
 * memory itself.
 *
 * A script that is sent twice (ioredis resends unanswered commands after a reconnect)
 * cannot apply twice: `complete`, `release` and `extend` first check that the record is in
 * progress and held by the caller's owner token, which the first application already
 * changed (to `completed` or `released`), so the second changes nothing and answers
 * `not_owner`; a repeated `acquire` finds its own live lease and answers with it, so the
 * operation is not started a second time.
 *
 * Creating the store opens no connection; calls made while the client is disconnected
 * follow the client's own offline-queue and retry settings. Every Redis failure (connection
 * lost, `READONLY` after a failover, `CLUSTERDOWN`, a script error) is thrown as
 * `StoreUnavailableError` with the ioredis error as `cause`.
 */
export function createRedisStore(options: RedisStoreOptions): RedisStore {
  const { client } = options;
  if (!client || typeof (client as { defineCommand?: unknown }).defineCommand !== 'function') {
    throw new InvalidInputError('createRedisStore needs an ioredis Redis or Cluster client');
  }
  const keyPrefix = options.keyPrefix ?? 'idem:';
  const maxOutcomeBytes = options.maxOutcomeBytes ?? DEFAULT_MAX_OUTCOME_BYTES;
  if (!(Number.isSafeInteger(maxOutcomeBytes) && maxOutcomeBytes > 0)) {
    throw new InvalidInputError('maxOutcomeBytes must be a positive integer');
  }
  const redis = defineScripts(client);
  const capabilities: StoreCapabilities = { clock: 'server', maxOutcomeBytes };
  const redisKey = (storageKey: string): string => keyPrefix + storageKey;

  return {
    capabilities,
    redisKey,

    async acquire(input: AcquireInput): Promise<AcquireResult> {
      const lease = duration('leaseMs', input.leaseMs);
      const retention = duration('retentionMs', input.retentionMs);
      const reply = await call('acquire', () =>
        redis.idemAcquireV1Buffer(
          redisKey(input.key),
          input.fingerprint,
          input.owner,
          lease,
          retention,
        ),
      );
      if (integer(reply[0]) === 1) {
        return {
          kind: 'acquired',
          fence: integer(reply[1]),
          leaseUntil: integer(reply[2]),
          takeover: integer(reply[3]) === 1,
        };
      }
      return { kind: 'found', record: toRecord(reply.slice(2)), now: integer(reply[1]) };
    },

    async complete(input: CompleteInput): Promise<OwnerWriteResult> {
      if (input.outcome.length > maxOutcomeBytes) {
        throw new OutcomeTooLargeError(input.outcome.length, maxOutcomeBytes);
      }
      const retention = duration('retentionMs', input.retentionMs);
      const outcome = Buffer.from(
        input.outcome.buffer,
        input.outcome.byteOffset,
        input.outcome.byteLength,
      );
      const done = await call('complete', () =>
        redis.idemCompleteV1(redisKey(input.key), input.owner, retention, outcome),
      );
      return done === 1 ? { ok: true } : NOT_OWNER;
    },

    async release(input: ReleaseInput): Promise<OwnerWriteResult> {
      const retention = duration('retentionMs', input.retentionMs);
      const done = await call('release', () =>
        redis.idemReleaseV1(redisKey(input.key), input.owner, retention),
      );
      return done === 1 ? { ok: true } : NOT_OWNER;
    },

    async extend(input: ExtendInput): Promise<OwnerWriteResult> {
      const lease = duration('leaseMs', input.leaseMs);
      const retention = duration('retentionMs', input.retentionMs);
      const leaseUntil = await call('extend', () =>
        redis.idemExtendV1(redisKey(input.key), input.owner, lease, retention),
      );
      return leaseUntil > 0 ? { ok: true, leaseUntil } : NOT_OWNER;
    },

    async get(key: string): Promise<StoredRecord | undefined> {
      const reply = await call('get', () => redis.idemGetV1Buffer(redisKey(key)));
      return reply ? toRecord(reply) : undefined;
    },
  };
}
