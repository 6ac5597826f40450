import { checkObject, checkTimerMs } from '@idem/core';
import type { ClusterOptions, RedisOptions } from 'ioredis';

/** Options of {@link recommendedRedisOptions} and {@link recommendedRedisClusterOptions}. */
export interface RecommendedRedisOptionsInput {
  /**
   * Longest a command may wait for its answer, in ms (ioredis `commandTimeout`); also the
   * connect timeout and the silent-socket timeout (`socketTimeout`). Keep it below core's
   * `storeTimeoutMs` (5 s) and above any `waitForReplicas.timeoutMs`.
   * @default 2_000
   */
  commandTimeoutMs?: number;
  /**
   * Longest pause between two reconnection attempts, in ms: once Redis is back, the client is
   * ready again within about this long.
   * @default 1_000
   */
  maxReconnectDelayMs?: number;
}

/**
 * The two durations, checked: positive integers of ms that Node's timers honour (at most
 * 2^31 - 1). ioredis arms its command, socket and connect timeouts with `setTimeout`, which
 * fires a longer delay after 1 ms: every socket was destroyed right after its first write.
 */
function settings(input: RecommendedRedisOptionsInput) {
  checkObject('recommended Redis options', input);
  const commandTimeout = checkTimerMs('commandTimeoutMs', input.commandTimeoutMs ?? 2_000);
  const maxDelay = checkTimerMs('maxReconnectDelayMs', input.maxReconnectDelayMs ?? 1_000);
  return { commandTimeout, maxDelay };
}

/**
 * Exponential backoff with jitter, capped at `maxDelay` ms. Never `null`: ioredis keeps
 * reconnecting for as long as the process lives, so an outage ends by itself.
 */
function reconnectDelay(maxDelay: number): (times: number) => number {
  return (times) => {
    const exponential = Math.min(maxDelay, 50 * 2 ** Math.min(times, 16));
    return Math.max(10, Math.round(exponential * (0.5 + Math.random() / 2)));
  };
}

/** `READONLY`: the connection reached a demoted primary after a failover; reconnect. */
const reconnectOnReadOnly = (error: Error): boolean => error.message.startsWith('READONLY');

/** Per-connection options shared by a standalone client and every Cluster node. */
function connectionOptions(commandTimeout: number) {
  return {
    // No command waits longer than this for its answer (a silent connection included).
    commandTimeout,
    connectTimeout: commandTimeout,
    // A connection that stops answering while commands wait is dropped and replaced, so
    // a blackholed socket does not keep timing out call after call.
    socketTimeout: commandTimeout,
    keepAlive: 10_000,
    // Commands caught in a dropped connection are resent once it is back (ioredis's
    // autoResendUnfulfilledCommands); the store answers a resent call as its first delivery.
    maxRetriesPerRequest: 1,
    // A restarted Redis still loading its data is asked again every 100 ms (ioredis waits
    // a second or more by default), so the client is ready as soon as Redis is.
    maxLoadingRetryTime: 100,
  };
}

/**
 * ioredis options for a standalone (or Sentinel-managed) `Redis` client used by an idem store:
 * spread them into `new Redis(url, { ...recommendedRedisOptions(), ...yours })`.
 *
 * With them, a store call MUST settle within `commandTimeoutMs`: while Redis is unreachable
 * calls fail at once (`enableOfflineQueue: false`) with `StoreUnavailableError`, and a
 * connection that falls silent is dropped after `commandTimeoutMs`. The client MUST keep
 * reconnecting for the life of the process (`retryStrategy` never returns `null`; backoff
 * capped at `maxReconnectDelayMs`), so service resumes by itself within about that long
 * once Redis is back, whatever the outage length. A `READONLY` answer (a demoted primary)
 * triggers a reconnect.
 *
 * Because calls are refused while disconnected, wait for the client to be ready before
 * serving (`lazyConnect: true` and `await client.connect()`, or the `ready` event). Use a
 * client of its own for idem if the application runs blocking commands (BLPOP and the
 * like), which `socketTimeout` would cut.
 */
export function recommendedRedisOptions(input: RecommendedRedisOptionsInput = {}): RedisOptions {
  const { commandTimeout, maxDelay } = settings(input);
  return {
    ...connectionOptions(commandTimeout),
    enableOfflineQueue: false,
    retryStrategy: reconnectDelay(maxDelay),
    reconnectOnError: reconnectOnReadOnly,
  };
}

/**
 * ioredis options for a `Cluster` used by an idem store:
 * `new Cluster(nodes, { ...recommendedRedisClusterOptions(), ...yours })`. The same bounds as
 * {@link recommendedRedisOptions}: per-node connection options with `commandTimeoutMs`, a
 * cluster reconnect strategy that never gives up (capped at `maxReconnectDelayMs`), calls
 * refused at once while the cluster is unreachable, slot refreshes bounded by the timeout.
 * The timeout bounds each attempt on a node, not the whole call: a command sent while its
 * node's connection is being replaced waits for that connection first, so on a Cluster a
 * call MAY take up to about twice `commandTimeoutMs` (measured: 3.9 s with 2 s, one primary
 * stopped). Keep `2 × commandTimeoutMs` below core's `storeTimeoutMs`, which bounds every
 * call whatever the client does.
 */
export function recommendedRedisClusterOptions(
  input: RecommendedRedisOptionsInput = {},
): ClusterOptions {
  const { commandTimeout, maxDelay } = settings(input);
  return {
    clusterRetryStrategy: reconnectDelay(maxDelay),
    enableOfflineQueue: false,
    slotsRefreshTimeout: commandTimeout,
    redisOptions: { ...connectionOptions(commandTimeout), reconnectOnError: reconnectOnReadOnly },
  };
}
