import type { Client, Pool, QueryConfig, QueryResult, QueryResultRow } from 'pg';
import type { Queryable } from './pg-call.js';

/** How long the connection stays open after the last execution that held a record ended. */
export const LINGER_MS = 10_000;

/** The server answered the statement (an error it reported, the connection still fine). */
function answeredByServer(error: unknown): boolean {
  const reported = error as { severity?: unknown; code?: unknown } | null;
  return typeof reported?.severity === 'string' && typeof reported.code === 'string';
}

/** node-postgres' socket of a client (absent in pg-native). */
function socketOf(client: Client): { destroy(): void; unref?(): void } | undefined {
  const stream = (client as { connection?: { stream?: { destroy?: unknown } } }).connection?.stream;
  return typeof stream?.destroy === 'function'
    ? (stream as { destroy(): void; unref?(): void })
    : undefined;
}

/** A statement waiting for the renewal connection. */
interface Waiting {
  config: QueryConfig;
  /** When its time limit (`query_timeout`) passes, counted from the call. */
  deadline: number;
  resolve(result: QueryResult<QueryResultRow>): void;
  reject(error: unknown): void;
}

/** A statement whose time limit passed while it waited for the renewal connection (never sent). */
export class NotSentError extends Error {
  constructor() {
    super('The statement timed out waiting for the renewal connection: it was not sent');
    this.name = 'NotSentError';
  }
}

/**
 * Where the transactional engine sends the statements that keep a held record safe while its
 * business transaction runs: the held-lease renewals, and the termination of a transaction's
 * backend at the maximum hold. Through the pool when it has a free connection at once (every
 * such statement in parallel, as any store call), else on a connection of the engine's own,
 * outside the pool, or, while that one is busy with another statement, on a new connection
 * of the pool if the pool is below its size: when every connection of the pool is held by a long business transaction
 * (a pool sized to the concurrency, a burst of slow requests), a statement through the pool
 * would wait for a free one until its time limit and the healthy owners' signals would abort;
 * a new pool connection would be opened within the statement's limit.
 *
 * The own connection:
 * - Built as the pool builds its clients (`new pool.Client(pool.options)`, the pool's
 *   `connectionTimeoutMillis` bounded by `openMs`; `statement_timeout` and `lock_timeout`
 *   the store's statement limit), and the pool's `connect` listeners run on it as on every
 *   new client of the pool, its `remove` listeners when it is closed (session settings such
 *   as `search_path` set there apply to it as well).
 * - Opened in the background when an execution begins to hold a record ({@link use}): no
 *   execution waits for it, only a statement that needs it, within its own time limit; a
 *   statement after a failed opening tries again.
 * - Sends one statement at a time, in order, each within what is left of its time limit
 *   (node-postgres' `query_timeout`, which the store sets on every statement): a limit counts
 *   from the call, and one that passes while the statement waits its turn fails that statement
 *   only ({@link NotSentError}), never the connection. A connection that reports an error,
 *   ends, or does not answer a statement it was sent within its limit is destroyed; the next
 *   statement opens another.
 * - Kept while executions hold records and ten seconds after the last; its socket is unref'd,
 *   so an idle renewal connection never keeps the process alive.
 */
export class RenewalConnection implements Queryable {
  private client: Client | undefined;
  private opening: Promise<Client> | undefined;
  private users = 0;
  private readonly waiting: Waiting[] = [];
  private sending = false;
  private linger: ReturnType<typeof setTimeout> | undefined;
  /** Clients the pool's 'connect' listeners were told of. */
  private readonly announced = new WeakSet<Client>();

  constructor(
    private readonly pool: Pool,
    /** Longest wait for a new connection to be ready. */
    private readonly openMs: number,
    /** The store's statement time limit, also set as the session's statement and lock timeouts. */
    private readonly statementMs: number,
    /** How long it stays open once no execution uses it. */
    private readonly lingerMs = LINGER_MS,
  ) {}

  /**
   * An execution begins to hold a record: the connection is opened now if it is not open
   * (without waiting). Call the function returned once, when the execution ended.
   */
  use(): () => void {
    this.users++;
    if (this.linger !== undefined) {
      clearTimeout(this.linger);
      this.linger = undefined;
    }
    this.open().catch(() => {
      // A statement that needs it opens it again, within its own time limit.
    });
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.users--;
      this.idle();
    };
  }

  query<R extends QueryResultRow = QueryResultRow>(config: QueryConfig): Promise<QueryResult<R>> {
    const pool = this.pool;
    // A free connection of the pool, at once (none waiting for one): nothing to wait for.
    if (pool.idleCount > 0 && pool.waitingCount === 0) return pool.query<R>(config);
    // The own connection busy and the pool below its size: a new pool connection (so that
    // statements run side by side, one slow renewal never delaying the others). When the
    // own connection is free, or still opening, it is used: opening one in the pool costs
    // as much, within the statement's limit.
    const ownBusy = this.sending || this.waiting.length > 0;
    if (ownBusy && pool.waitingCount === 0 && pool.totalCount < (Number(pool.options.max) || 10))
      return pool.query<R>(config);
    const limit = Number((config as { query_timeout?: unknown }).query_timeout);
    return new Promise<QueryResult<R>>((resolve, reject) => {
      this.waiting.push({
        config,
        deadline: limit > 0 ? performance.now() + limit : Number.POSITIVE_INFINITY,
        resolve: resolve as Waiting['resolve'],
        reject,
      });
      void this.pump();
    });
  }

  /** Sends the next waiting statement, unless one is on its way. */
  private async pump(): Promise<void> {
    if (this.sending) return;
    const next = this.waiting.shift();
    if (!next) {
      this.idle();
      return;
    }
    this.sending = true;
    try {
      const left = next.deadline - performance.now();
      if (left < 1) throw new NotSentError();
      const client = await this.open();
      const sendLeft = Math.floor(next.deadline - performance.now());
      if (sendLeft < 1) throw new NotSentError();
      const config =
        next.deadline === Number.POSITIVE_INFINITY
          ? next.config
          : ({ ...next.config, query_timeout: sendLeft } as QueryConfig);
      try {
        next.resolve(await client.query(config));
      } catch (error) {
        if (!answeredByServer(error)) this.destroy(client);
        throw error;
      }
    } catch (error) {
      next.reject(error);
    } finally {
      this.sending = false;
      void this.pump();
    }
  }

  private open(): Promise<Client> {
    if (this.client) return Promise.resolve(this.client);
    this.opening ??= this.connect().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async connect(): Promise<Client> {
    const options = this.pool.options as unknown as Record<string, unknown>;
    const poolLimit = Number(options.connectionTimeoutMillis) || Number.POSITIVE_INFINITY;
    const ClientClass = (this.pool as unknown as { Client: new (config: object) => Client }).Client;
    const client = new ClientClass({
      ...options,
      connectionTimeoutMillis: Math.min(poolLimit, this.openMs),
      // Only the store's short statements run here: the server ends one that waits for a lock
      // or runs past the store's limit, so it never holds the ones waiting behind it.
      statement_timeout: this.statementMs,
      lock_timeout: this.statementMs,
    });
    // Before anything can fail: an error event without a listener would crash the process.
    client.on('error', () => this.destroy(client));
    client.on('end', () => {
      this.forget(client);
      this.removed(client);
    });
    try {
      await client.connect();
    } catch (error) {
      this.destroy(client);
      throw error;
    }
    try {
      // The pool's per-connection set-up (its listeners may query: those statements run
      // before the first renewal). Its 'remove' listeners hear of it when it is closed.
      this.announced.add(client);
      this.pool.emit('connect', client);
    } catch (error) {
      this.close(client);
      throw error;
    }
    socketOf(client)?.unref?.();
    this.client = client;
    // Opened for an execution that ended meanwhile: it lingers as after a use.
    this.idle();
    return client;
  }

  /** Closes the connection once no execution used it for `lingerMs`. */
  private idle(): void {
    if (
      this.users > 0 ||
      this.sending ||
      this.waiting.length > 0 ||
      this.linger !== undefined ||
      !this.client
    )
      return;
    this.linger = setTimeout(() => {
      this.linger = undefined;
      if (this.users > 0 || this.sending || this.waiting.length > 0) return;
      const client = this.client;
      if (client) this.close(client);
    }, this.lingerMs);
    this.linger.unref?.();
  }

  private forget(client: Client): void {
    if (this.client === client) this.client = undefined;
  }

  /** Ends the connection politely (a silent one is destroyed when `end` fails). */
  private close(client: Client): void {
    this.forget(client);
    this.removed(client);
    void client.end().catch(() => socketOf(client)?.destroy());
  }

  private destroy(client: Client): void {
    this.forget(client);
    this.removed(client);
    const socket = socketOf(client);
    if (socket) socket.destroy();
    else void client.end().catch(() => {});
  }

  /** The pool's 'remove' listeners hear once of each client its 'connect' listeners saw. */
  private removed(client: Client): void {
    if (!this.announced.has(client)) return;
    this.announced.delete(client);
    try {
      this.pool.emit('remove', client);
    } catch {
      // A listener's failure is not the renewal's.
    }
  }
}
