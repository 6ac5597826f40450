import { Redis, type RedisOptions } from 'ioredis';

/** Longest pause between two reconnection attempts, in ms. */
export const MAX_RECONNECT_DELAY_MS = 200;

/**
 * When to try the next reconnection: 50 ms, 100 ms, … capped at
 * {@link MAX_RECONNECT_DELAY_MS}, and never `null`. ioredis ends a client for good when its
 * `retryStrategy` returns `null` (the app used to give up after 20 attempts, about 15 s,
 * and then answered 503 until it was restarted); this one retries for the life of the
 * process, so service returns by itself within about 200 ms of Redis coming back, in time
 * for an execution caught by the outage to renew its lease and finish. A refused loopback
 * connection costs next to nothing, five a second.
 */
export function reconnectDelay(attempt: number): number {
  return Math.min(Math.max(1, attempt) * 50, MAX_RECONNECT_DELAY_MS);
}

/**
 * The ioredis options of every client the app (and its tests and demo) builds. They MUST
 * keep these properties:
 * - reconnect for as long as the process lives (`retryStrategy` never gives up);
 * - fail fast while disconnected: no offline queue, so a command sent while the connection
 *   is down fails at once (503) instead of waiting for a reconnection, and never runs late;
 *   a command in flight when the connection drops fails at once (`maxRetriesPerRequest: 0`)
 *   instead of being resent on the next connection;
 * - ready again within 100 ms of a restarted Redis finishing to load its data;
 * - every command bounded by `timeoutMs` (`commandTimeout`), and a connection that stays
 *   silent that long with commands pending is destroyed and replaced (`socketTimeout`), so
 *   a Redis that stops answering without closing (SIGSTOP, a blackholed network) costs
 *   each request at most `timeoutMs` and the connection is rebuilt by itself.
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
    // A Redis still loading its AOF after a restart is asked again every 100 ms (ioredis
    // waits a second or more by default), so the app is back as soon as Redis is.
    maxLoadingRetryTime: 100,
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
