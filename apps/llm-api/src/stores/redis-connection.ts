import { Redis, type RedisOptions } from 'ioredis';

/** Longest pause between two reconnection attempts, in ms. */
export const MAX_RECONNECT_DELAY_MS = 500;

/** How often a connection made while Redis loads its data asks again whether it is ready. */
export const LOADING_RECHECK_MS = 100;

/**
 * When to try the next reconnection: 100 ms, 200 ms, … capped at
 * {@link MAX_RECONNECT_DELAY_MS}, and never `null`. ioredis ends a client for good when its
 * `retryStrategy` returns `null` (the app used to give up after 20 attempts, about 15 s,
 * and then answered 503 until it was restarted); this one retries for the life of the
 * process, so service returns by itself within about half a second of Redis coming back.
 */
export function reconnectDelay(attempt: number): number {
  return Math.min(Math.max(1, attempt) * 100, MAX_RECONNECT_DELAY_MS);
}

/**
 * The ioredis options of every client the app (and its tests and demo) builds. They MUST
 * keep these properties:
 * - reconnect for as long as the process lives (`retryStrategy` never gives up);
 * - fail fast while disconnected: no offline queue, so a command sent while the connection
 *   is down fails at once (503) instead of waiting for a reconnection, and never runs late;
 *   a command in flight when the connection drops fails at once (`maxRetriesPerRequest: 0`)
 *   instead of being resent on the next connection;
 * - every command bounded by `timeoutMs` (`commandTimeout`), and a connection that stays
 *   silent that long with commands pending is destroyed and replaced (`socketTimeout`), so
 *   a Redis that stops answering without closing (SIGSTOP, a blackholed network) costs
 *   each request at most `timeoutMs` and the connection is rebuilt by itself;
 * - a connection made while Redis is still loading its data (`LOADING`, right after a
 *   restart) checks again every {@link LOADING_RECHECK_MS} instead of ioredis's default of
 *   one second or more, so service returns as soon as Redis is ready.
 */
export function redisClientOptions(timeoutMs: number): RedisOptions {
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: timeoutMs,
    socketTimeout: timeoutMs,
    connectTimeout: timeoutMs,
    keepAlive: 1_000,
    retryStrategy: reconnectDelay,
    maxLoadingRetryTime: LOADING_RECHECK_MS,
  };
}

/**
 * Builds a client with {@link redisClientOptions}, connects it and checks that Redis
 * answers PING, all within about `timeoutMs`. On failure the client is disconnected (it
 * stops reconnecting) and the error is thrown: a server refuses to start without its store.
 */
export async function connectRedis(url: string, timeoutMs: number): Promise<Redis> {
  const client = new Redis(url, redisClientOptions(timeoutMs));
  // Failures reach callers through their commands (503); no unhandled 'error' event.
  client.on('error', () => undefined);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const ready = (async () => {
      await client.connect();
      await client.ping();
    })();
    ready.catch(() => undefined);
    await Promise.race([
      ready,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer within ${timeoutMs} ms`)),
          // Connect, ready check and PING are each bounded by timeoutMs.
          3 * timeoutMs,
        );
      }),
    ]);
    return client;
  } catch (error) {
    client.disconnect();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/** Where {@link reportConnectionChanges} writes. */
export interface ConnectionLog {
  /** The connection was lost (once per outage, with the last error seen). */
  lost(message: string): void;
  /** It is ready again (with how long it was down). */
  back(message: string): void;
}

/**
 * Logs each outage of a client's connection once: when it is lost and when it is ready
 * again, with how long it was down, so an operator can line up 503s with the store. Returns
 * a function that stops the reports (call it before closing the client on purpose).
 */
export function reportConnectionChanges(client: Redis, log: ConnectionLog): () => void {
  let lostAt: number | undefined;
  let lastError = '';
  const onError = (error: Error) => {
    lastError = error.message;
  };
  const onClose = () => {
    if (lostAt !== undefined) return;
    lostAt = Date.now();
    log.lost(`Redis connection lost${lastError ? ` (${lastError})` : ''}; reconnecting`);
  };
  const onReady = () => {
    if (lostAt === undefined) return;
    log.back(`Redis connection ready again after ${((Date.now() - lostAt) / 1000).toFixed(1)} s`);
    lostAt = undefined;
    lastError = '';
  };
  client.on('error', onError).on('close', onClose).on('ready', onReady);
  return () => {
    client.off('error', onError).off('close', onClose).off('ready', onReady);
  };
}
