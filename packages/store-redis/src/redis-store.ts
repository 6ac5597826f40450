import { createHash } from 'node:crypto';
import {
  type AcquireInput,
  type AcquireResult,
  type CompleteInput,
  checkObject,
  checkOutcome,
  type ExtendInput,
  errorMessage,
  guardStoreCall,
  type IdempotencyStore,
  InvalidInputError,
  NOT_OWNER,
  OWNED,
  type OwnerWriteResult,
  ownerWriteResult,
  type ReleaseInput,
  type StoreAdmin,
  type StoreCapabilities,
  type StoredRecord,
  type StoreErrorRules,
  StoreUnavailableError,
} from '@idem/core';
import type { Cluster, Redis } from 'ioredis';
import { DELETE_LUA, FORCE_RELEASE_LUA, INSPECT_LUA } from './admin-scripts.js';
import { checkMaxOutcomeBytes, createOutcomeLimit } from './bulk-limit.js';
import {
  checkClient,
  checkFingerprint,
  checkKeyPrefix,
  checkOwner,
  checkStorageKey,
  duration,
  durationText,
} from './input-checks.js';
import { type AdminCommands, createRedisAdmin } from './redis-admin.js';
import { describeReply, integer, type Reply, toRecord } from './redis-reply.js';
import {
  checkWaitForReplicas,
  createRunWaited,
  type RunWaited,
  type WaitForReplicas,
} from './replica-wait.js';
import {
  ACQUIRE_LUA,
  COMPLETE_LUA,
  EXTEND_LUA,
  GET_LUA,
  packDoubles,
  packDurations,
  RELEASE_LUA,
} from './scripts.js';
import { createWriteBatcher } from './write-batching.js';

/** Options of {@link createRedisStore}. Durations are milliseconds. */
export interface RedisStoreOptions {
  /**
   * An ioredis client the caller built and owns: a standalone `Redis` (also one that talks
   * to a Sentinel-managed primary) or a `Cluster`. The store opens no connection and never
   * closes it. Not a pipeline or a `multi()`, and not built with `stringNumbers: true`
   * (`InvalidInputError`).
   */
  client: Redis | Cluster;
  /**
   * Prepended to every Redis key. Must not contain `{` or `}`: the store puts the storage
   * key in a hash tag (`<prefix>{<storageKey>}`) so that a record and its fence memory
   * share a Cluster slot while records spread over all shards. At most 1024 UTF-16 code units (an emoji counts two).
   * @default 'idem:'
   */
  keyPrefix?: string;
  /**
   * Largest encoded outcome accepted, in bytes; a larger one fails with
   * `OutcomeTooLargeError` before anything is sent. At most 512 MiB less 64 KiB
   * (536_805_376): Redis refuses any argument above its `proto-max-bulk-len` (512 MiB by
   * default), and the record holds the owner, the fingerprint and a header next to the
   * outcome. An outcome above 960 KiB is also checked against the server's own
   * `proto-max-bulk-len` (less 64 KiB), read once with `CONFIG GET` when the first such
   * outcome comes (a server that refuses `CONFIG` is taken to have the default).
   * @default 16_777_216 (16 MiB)
   */
  maxOutcomeBytes?: number;
  /**
   * How long a storage key's last fence is remembered after its record expired, in ms. A
   * later acquisition of the key within that time continues from it (fence + 1) instead of
   * restarting at 1, so a downstream that remembers fences never sees one repeat. Costs one
   * small string key per storage key; `0` keeps only the record (fences then restart at 1
   * once Redis dropped an expired record, the minimum the store contract asks).
   * @default 86_400_000 (24 h)
   */
  fenceMemoryMs?: number;
  /**
   * Confirms acquisitions and completions on replicas before answering (Redis `WAIT`, sent
   * in the same round trip as the script). When set, an `acquire` that took the key and a
   * `complete` that recorded the outcome MUST be acknowledged by `replicas` replicas within
   * `timeoutMs`, or the call fails with `StoreUnavailableError` (core retries a completion,
   * owner-checked; an unconfirmed acquisition is released again at once, best effort, since
   * nothing ran yet). An acknowledged write then survives a failover to any replica that
   * acknowledged it. Releases and lease renewals are not waited for: losing one in a
   * failover costs a wait, never a second execution. Needs `CLIENT ID` and `WAIT` to be
   * allowed (ACL `+client|id +wait`). `timeoutMs` MUST stay below the client's
   * `commandTimeout` and `socketTimeout`.
   * @default undefined (no waiting: replication is asynchronous)
   */
  waitForReplicas?: WaitForReplicas;
}

/** A Redis-backed store; see {@link createRedisStore}. */
export interface RedisStore extends IdempotencyStore {
  /** The Redis key that holds the record of `storageKey`: `<keyPrefix>{<storageKey>}`. */
  redisKey(storageKey: string): string;
  /** The Redis key that remembers the last fence of `storageKey`: `<keyPrefix>{<storageKey>}:fence`. */
  fenceKey(storageKey: string): string;
  /** Operator actions, one script each; `delete` keeps the fence memory key. */
  readonly admin: StoreAdmin;
}

/** The store's scripts as callable commands; `...Buffer` variants keep bulk replies as bytes. */
interface ScriptedClient extends AdminCommands {
  acquire(...args: [key: string, fenceKey: string, ...argv: string[]]): Promise<Reply[]>;
  complete(...args: [key: string, fenceKey: string, ...argv: (string | Buffer)[]]): Promise<number>;
  release(...args: [key: string, fenceKey: string, ...argv: string[]]): Promise<number>;
  extend(...args: [key: string, fenceKey: string, ...argv: string[]]): Promise<number>;
  get(key: string): Promise<Buffer | null>;
}

const SCRIPTS = {
  acquire: { lua: ACQUIRE_LUA, numberOfKeys: 2, binaryReply: true },
  complete: { lua: COMPLETE_LUA, numberOfKeys: 2, binaryReply: false },
  release: { lua: RELEASE_LUA, numberOfKeys: 2, binaryReply: false },
  extend: { lua: EXTEND_LUA, numberOfKeys: 2, binaryReply: false },
  get: { lua: GET_LUA, numberOfKeys: 1, binaryReply: true },
  inspect: { lua: INSPECT_LUA, numberOfKeys: 1, binaryReply: true },
  forceRelease: { lua: FORCE_RELEASE_LUA, numberOfKeys: 2, binaryReply: false },
  delete: { lua: DELETE_LUA, numberOfKeys: 1, binaryReply: false },
} as const;

const DEFAULT_MAX_OUTCOME_BYTES = 16 * 1024 * 1024;
const DEFAULT_FENCE_MEMORY_MS = 86_400_000;

/**
 * Registers the scripts on the client with `defineCommand`. Each command is named after its
 * script's SHA-1, so two versions of this package sharing one client never call each
 * other's scripts, and a second store on the same client reuses the definitions.
 */
function defineScripts(client: Redis | Cluster): ScriptedClient {
  const target = client as unknown as Record<string, unknown>;
  const commands: Record<string, unknown> = {};
  const batch = createWriteBatcher(client);
  for (const [operation, { lua, numberOfKeys, binaryReply }] of Object.entries(SCRIPTS)) {
    const name = `idem_${operation}_${createHash('sha1').update(lua).digest('hex').slice(0, 12)}`;
    if (typeof target[name] !== 'function') client.defineCommand(name, { lua, numberOfKeys });
    const method = target[binaryReply ? `${name}Buffer` : name] as (...args: unknown[]) => unknown;
    commands[operation] = (...args: unknown[]) => {
      batch();
      return method.apply(client, args);
    };
  }
  return commands as unknown as ScriptedClient;
}

/**
 * Decodes the acquire script's reply (see ACQUIRE_LUA) to an acquisition by `owner`. A found
 * record's outcome is a view into the reply's bytes (fresh memory of this reply, shared with
 * no other record): core decodes it at once, so copying it here would only cost an
 * allocation. An acquisition's origin comes back only when it is not `owner` (a takeover, a
 * retry after a release, a redelivery of either).
 */
function decodeAcquire(reply: Reply[], owner: string): AcquireResult {
  if (integer(reply[0]) === 1) {
    const carried = reply[4];
    if (carried !== undefined && !Buffer.isBuffer(carried)) {
      throw new StoreUnavailableError(
        `Redis returned a malformed origin: ${describeReply(carried)}`,
      );
    }
    return {
      kind: 'acquired',
      fence: integer(reply[1]),
      leaseUntil: integer(reply[2]),
      takeover: integer(reply[3]) === 1,
      origin: carried === undefined ? owner : carried.toString('utf8'),
    };
  }
  return { kind: 'found', record: toRecord(reply[2], false), now: integer(reply[1]) };
}

/**
 * A failed Redis call becomes STORE_UNAVAILABLE (`unsent` when the client refused it while
 * disconnected, with `enableOfflineQueue: false`), except an acquisition refused for memory
 * (`OOM` under `noeviction`): STORE_FULL, as for any bounded store.
 */
const REDIS_ERRORS: StoreErrorRules = {
  service: 'Redis',
  isFull: (error, operation) => operation === 'acquire' && errorMessage(error).startsWith('OOM'),
  isUnsent: (error) => errorMessage(error).includes('enableOfflineQueue options is false'),
};

const call = <T>(operation: string, run: () => Promise<T>): Promise<T> =>
  guardStoreCall(REDIS_ERRORS, operation, run);

/**
 * The packed durations of the acquire script ({@link packDurations}: lease, retention and
 * the store's fence memory) and of the complete script ({@link packDoubles}: retention,
 * fence memory), from the checked texts of the lease and the retention. The last of each
 * is kept, so a steady stream of calls packs nothing.
 */
function keptDurations(fenceMemoryMs: string) {
  const memory = Number(fenceMemoryMs);
  let lastLease = '';
  let lastRetention = '';
  let acquire: string | undefined;
  let completeRetention = '';
  let complete: Buffer | undefined;
  return {
    acquire(lease: string, retention: string): string {
      if (!acquire || lease !== lastLease || retention !== lastRetention) {
        acquire = packDurations(Number(lease), Number(retention), memory);
        lastLease = lease;
        lastRetention = retention;
      }
      return acquire;
    },
    complete(retention: string): Buffer {
      if (!complete || retention !== completeRetention) {
        complete = packDoubles(Number(retention), memory);
        completeRetention = retention;
      }
      return complete;
    },
  };
}

/**
 * Creates an idempotency store on Redis through an ioredis client the caller owns.
 *
 * Each operation is one Lua script, registered with ioredis's `defineCommand` (EVALSHA,
 * reloaded automatically after a `SCRIPT FLUSH` or a failover to a fresh primary), so each
 * is atomic and costs one round trip. A script touches only the keys of one storage key
 * (its record, and its fence memory in the same hash slot), so it runs unchanged on a
 * Cluster. Expiry is decided by Redis's `TIME` inside each script
 * (`capabilities.clock = 'server'`): client clock skew can neither extend nor cut a lease.
 * Each record key carries a `PEXPIREAT` at its retention deadline, so Redis frees the
 * memory on time by itself.
 *
 * A script delivered twice (ioredis resends unanswered commands after a reconnect) answers
 * what its first delivery would have answered, and never applies twice (contract rule 7):
 * - an `acquire` that finds an unexpired in-progress record held by its own owner token
 *   (lease live, or passed without anybody taking it over) is that acquisition: it renews
 *   the lease from now and answers `acquired` with the record's fence, unchanged, its
 *   origin and `takeover: false`;
 * - a `complete` that finds the record completed by its own owner with the very same
 *   outcome bytes answers `{ ok: true }` and changes nothing; with other bytes, `not_owner`;
 * - a `release` that finds its own owner's tombstone answers `{ ok: true }`;
 * - a repeated `extend` renews the same lease again.
 *
 * Creating the store opens no connection; calls made while the client is disconnected
 * follow the client's own offline-queue and retry settings. Every Redis failure (connection
 * lost, `READONLY` after a failover, `CLUSTERDOWN`, a script error) is thrown as
 * `StoreUnavailableError` with the ioredis error as `cause`.
 */
export function createRedisStore(options: RedisStoreOptions): RedisStore {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidInputError('createRedisStore needs an options object');
  }
  const client = checkClient(options.client);
  const keyPrefix = checkKeyPrefix(options.keyPrefix ?? 'idem:');
  const maxOutcomeBytes = checkMaxOutcomeBytes(
    options.maxOutcomeBytes ?? DEFAULT_MAX_OUTCOME_BYTES,
  );
  const fenceMemory = duration('fenceMemoryMs', options.fenceMemoryMs ?? DEFAULT_FENCE_MEMORY_MS);
  const redis = defineScripts(client);
  const serverLimit = createOutcomeLimit(client);
  const wait = options.waitForReplicas;
  let runWaited: RunWaited | undefined;
  if (wait) {
    checkWaitForReplicas(client, wait);
    runWaited = createRunWaited(client, wait);
  }
  const unconfirmed = (operation: string, acknowledged: number) =>
    new StoreUnavailableError(
      `Redis ${operation} was acknowledged by ${acknowledged} of ${wait?.replicas} replicas within ${wait?.timeoutMs} ms`,
    );
  const capabilities: StoreCapabilities = { clock: 'server', maxOutcomeBytes };

  const redisKey = (storageKey: string): string => `${keyPrefix}{${checkStorageKey(storageKey)}}`;
  const fenceKey = (storageKey: string): string => `${redisKey(storageKey)}:fence`;
  // Leases and retentions repeat from call to call: their decimal text is kept.
  const leaseText = durationText('leaseMs');
  const retentionText = durationText('retentionMs');
  const durationsOf = keptDurations(fenceMemory);

  return {
    capabilities,
    redisKey,
    fenceKey,
    admin: createRedisAdmin(redis, redisKey, fenceMemory, call),

    async acquire(input: AcquireInput): Promise<AcquireResult> {
      checkObject('acquire', input);
      const lease = leaseText(input.leaseMs);
      const retention = retentionText(input.retentionMs);
      const key = redisKey(input.key);
      const fence = `${key}:fence`;
      const owner = checkOwner(input.owner);
      const fingerprint = checkFingerprint(input.fingerprint);
      const durations = durationsOf.acquire(lease, retention);
      if (!runWaited) {
        return decodeAcquire(
          await call('acquire', () => redis.acquire(key, fence, fingerprint, owner, durations)),
          owner,
        );
      }
      const args = [fingerprint, owner, durations] as const;
      const waited = await call('acquire', () =>
        runWaited<Reply[]>(ACQUIRE_LUA, [key, fence], args),
      );
      const result = decodeAcquire(waited.reply, owner);
      if (result.kind === 'acquired' && waited.acknowledged < (wait?.replicas ?? 0)) {
        // Nothing ran yet: give the key back (owner-checked) so that a retry need not wait
        // for the lease to pass. Best effort: if this fails too, the lease passes by itself.
        await redis.release(key, fence, owner, retention, fenceMemory).catch(() => 0);
        throw unconfirmed('acquire', waited.acknowledged);
      }
      return result;
    },

    async complete(input: CompleteInput): Promise<OwnerWriteResult> {
      checkObject('complete', input);
      const outcome = checkOutcome(input.outcome, maxOutcomeBytes);
      const durations = durationsOf.complete(retentionText(input.retentionMs));
      const key = redisKey(input.key);
      const fence = `${key}:fence`;
      const owner = checkOwner(input.owner);
      const size = outcome.byteLength;
      // Never send what Redis would refuse for its length: it would answer with a protocol
      // error and close the connection, cutting every other call on it.
      const fits = serverLimit.check(size);
      if (fits) await call('complete', () => fits);
      // A view, not a copy: ioredis writes the bytes to the socket as they are.
      const body = Buffer.from(outcome.buffer, outcome.byteOffset, outcome.byteLength);
      const send = <T>(run: () => Promise<T>): Promise<T> =>
        call('complete', () =>
          run().catch((error: unknown) => {
            throw serverLimit.failed(size, error) ?? error;
          }),
        );
      if (!runWaited) {
        const done = await send(() => redis.complete(key, fence, owner, durations, body, '0'));
        return ownerWriteResult(done > 0);
      }
      // touch = 1: a redelivered completion rewrites its status, so this WAIT covers it.
      const args = [owner, durations, body, '1'] as const;
      const waited = await send(() => runWaited<number>(COMPLETE_LUA, [key, fence], args));
      if (waited.reply === 0) return NOT_OWNER;
      if (waited.acknowledged < (wait?.replicas ?? 0))
        throw unconfirmed('complete', waited.acknowledged);
      return OWNED;
    },

    async release(input: ReleaseInput): Promise<OwnerWriteResult> {
      checkObject('release', input);
      const retention = retentionText(input.retentionMs);
      const key = redisKey(input.key);
      const owner = checkOwner(input.owner);
      const done = await call('release', () =>
        redis.release(key, `${key}:fence`, owner, retention, fenceMemory),
      );
      return ownerWriteResult(done > 0);
    },

    async extend(input: ExtendInput): Promise<OwnerWriteResult> {
      checkObject('extend', input);
      const lease = leaseText(input.leaseMs);
      const retention = retentionText(input.retentionMs);
      const key = redisKey(input.key);
      const owner = checkOwner(input.owner);
      const leaseUntil = await call('extend', () =>
        redis.extend(key, `${key}:fence`, owner, lease, retention, fenceMemory),
      );
      return ownerWriteResult(leaseUntil > 0, leaseUntil);
    },

    async get(key: string): Promise<StoredRecord | undefined> {
      const reply = await call('get', () => redis.get(redisKey(key)));
      return reply ? toRecord(reply, true) : undefined;
    },
  };
}
