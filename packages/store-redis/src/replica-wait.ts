import { createHash } from 'node:crypto';
import { InvalidInputError, StoreUnavailableError } from '@idem/core';
import type { Cluster, Redis } from 'ioredis';
import type { Reply } from './redis-reply.js';

/** Option `waitForReplicas` of `createRedisStore`. */
export interface WaitForReplicas {
  /** How many replicas MUST acknowledge a write before it counts. A positive integer. */
  replicas: number;
  /**
   * Longest wait for them, in ms (Redis `WAIT` timeout; never 0, which would block for
   * ever). Keep it below the client's `commandTimeout`.
   */
  timeoutMs: number;
}

/** A script run together with `WAIT`: its reply and how many replicas acknowledged. */
export interface WaitedReply<T> {
  reply: T;
  acknowledged: number;
}

/** Runs one script and then `WAIT`, on one connection, in one round trip. */
export type RunWaited = <T extends Reply>(
  lua: string,
  keys: readonly string[],
  args: readonly (string | Buffer)[],
) => Promise<WaitedReply<T>>;

/** Checks the option against the client's own timeouts. */
export function checkWaitForReplicas(client: Redis | Cluster, wait: WaitForReplicas): void {
  if (!(Number.isSafeInteger(wait.replicas) && wait.replicas > 0)) {
    throw new InvalidInputError('waitForReplicas.replicas must be a positive integer');
  }
  if (!(Number.isSafeInteger(wait.timeoutMs) && wait.timeoutMs > 0)) {
    throw new InvalidInputError('waitForReplicas.timeoutMs must be a positive integer of ms');
  }
  const options = (client as { options?: { commandTimeout?: number; socketTimeout?: number } })
    .options;
  const nodeOptions = (client as { options?: { redisOptions?: typeof options } }).options
    ?.redisOptions;
  for (const limit of [
    options?.commandTimeout,
    options?.socketTimeout,
    nodeOptions?.commandTimeout,
    nodeOptions?.socketTimeout,
  ]) {
    if (typeof limit === 'number' && wait.timeoutMs >= limit) {
      throw new InvalidInputError(
        `waitForReplicas.timeoutMs (${wait.timeoutMs}) must be below the client's command and socket timeouts (${limit})`,
      );
    }
  }
}

const isNoScript = (error: unknown) =>
  error instanceof Error && error.message.startsWith('NOSCRIPT');
const isMoved = (error: unknown) => error instanceof Error && error.message.startsWith('MOVED ');

/** Sends of one call at most: a reload after NOSCRIPT and a few slot moves. */
const MAX_SENDS = 4;

/** Refreshes a Cluster's slot map (errors ignored: the next send reports what is wrong). */
const refreshSlots = (cluster: Cluster): Promise<void> =>
  new Promise((resolve) => cluster.refreshSlotsCache(() => resolve()));

/**
 * Sends `CLIENT ID`, the script, `WAIT replicas timeout` and `CLIENT ID` again as one
 * pipeline: one round trip, one connection (on a Cluster, the node that holds the keys).
 * `WAIT` counts the replicas that acknowledged every write this connection made before it,
 * so it covers the script only if both ran on the same connection: when the two ids differ
 * (the connection dropped in between and ioredis resent part of the pipeline on a new one),
 * the write is reported as unconfirmed. The script is sent as `EVALSHA`, then as `EVAL` after
 * a `NOSCRIPT` (never through ioredis's own fallback, which would run it after the `WAIT`).
 * On a Cluster, a `MOVED` answer (the slot has another primary now) refreshes the slot map
 * and sends the pipeline again, to the new primary.
 */
export function createRunWaited(client: Redis | Cluster, wait: WaitForReplicas): RunWaited {
  return async <T extends Reply>(
    lua: string,
    keys: readonly string[],
    args: readonly (string | Buffer)[],
  ) => {
    const sha = createHash('sha1').update(lua).digest('hex');
    const send = (loaded: boolean) => {
      const pipeline = client.pipeline();
      pipeline.client('ID');
      // Bulk replies stay bytes (the `Buffer` variant), as through `defineCommand`.
      pipeline.callBuffer(
        loaded ? 'EVALSHA' : 'EVAL',
        loaded ? sha : lua,
        keys.length,
        ...keys,
        ...args,
      );
      pipeline.wait(wait.replicas, wait.timeoutMs);
      pipeline.client('ID');
      return pipeline.exec();
    };
    // ioredis follows MOVED for a pipeline only when every other command in it is a
    // read-only one, which CLIENT and WAIT are not: the pipeline would keep going to the
    // slot's old node until something else refreshed the slot map. A MOVED script was not
    // run, so it is sent again once the map is fresh.
    let loaded = true;
    let results = await send(loaded);
    for (let sends = 1; sends < MAX_SENDS; sends++) {
      const error = results?.[1]?.[0];
      if (loaded && isNoScript(error)) loaded = false;
      else if (client.isCluster && isMoved(error)) await refreshSlots(client as Cluster);
      else break;
      results = await send(loaded);
    }
    if (results?.length !== 4) {
      throw new StoreUnavailableError('Redis returned no answer to a replica-waited write');
    }
    for (const [error] of results) if (error) throw error;
    const [before, reply, acknowledged, after] = results.map(([, value]) => value);
    if (before !== after) {
      throw new StoreUnavailableError(
        'Redis connection changed between a write and its WAIT: replication unconfirmed',
      );
    }
    return { reply: reply as T, acknowledged: Number(acknowledged) };
  };
}
