/**
 * Most `connect()` requests a pool may hold for callers that stopped waiting before the
 * store asks it for no more connections. node-postgres keeps a waiter in the pool's queue
 * until a connection comes or the pool's own `connectionTimeoutMillis` passes: on a pool
 * without it, a silent server (frozen, blackholed) kept one waiter for every call of the
 * outage (measured: 98 of 100 calls, the queue growing for as long as the outage lasted), all
 * woken at once when the server answered again. Past this many, a call fails at once, unsent,
 * until the queue moves again.
 */
const MAX_ABANDONED_WAITERS = 64;

/** Per pool: its `connect()` requests still queued for callers given up on (shared by every store on it). */
const abandoned = new WeakMap<object, number>();

/**
 * Why `pool` is asked for no connection now (the abandoned waiters it still holds, past
 * the bound), or `undefined` when it may be asked. A pool being ended is always asked: it
 * refuses the call itself, saying so. (pg-pool never answers the requests still queued when
 * `end()` is called, so their count never comes down: the refusal blamed a silent server
 * and `connectionTimeoutMillis` for a pool the app had ended, for good.)
 */
export function poolBlocked(pool: object): string | undefined {
  if ((pool as { ending?: unknown }).ending === true) return undefined;
  // Only those still in the pool's queue: a request the pool took a new connection for
  // waits outside it, on that connection, one pool slot each (so at most `max` of them).
  // Counted, they refused every call of a pool larger than the bound whose new connections
  // hung (a frozen postmaster, new flows dropped) while an open connection served, with an
  // empty queue (the rev31b review).
  const queued = Number((pool as { waitingCount?: unknown }).waitingCount);
  const stale = Math.min(abandoned.get(pool) ?? 0, Number.isNaN(queued) ? Infinity : queued);
  if (stale < MAX_ABANDONED_WAITERS) return undefined;
  return `${stale} callers that stopped waiting for a pool connection still wait for one (a silent server, and a pool without connectionTimeoutMillis: see recommendedPoolConfig)`;
}

/**
 * One `connect()` request on `pool`, tracked: `abandon()` once its caller stopped waiting,
 * `settled()` once the pool answered it (in either order; each at most once counts).
 */
export function trackWaiter(pool: object): { abandon(): void; settled(): void } {
  let answered = false;
  let counted = false;
  return {
    abandon() {
      if (answered || counted) return;
      counted = true;
      abandoned.set(pool, (abandoned.get(pool) ?? 0) + 1);
    },
    settled() {
      answered = true;
      if (!counted) return;
      counted = false;
      abandoned.set(pool, (abandoned.get(pool) ?? 1) - 1);
    },
  };
}
