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

/**
 * The transactional engine's own connection for the statements that keep a held record
 * safe while its business transaction runs: the held-lease renewals and the termination of
 * a transaction's backend at the maximum hold. It is not one of the pool's: when every
 * connection of the pool is held by a long business transaction (a pool sized to the
 * concurrency, a burst of slow requests), a renewal through the pool would wait for a free
 * one until its time limit and the healthy owners' signals would abort.
 *
 * - Built as the pool builds its clients (`new pool.Client(pool.options)`, the pool's
 *   `connectionTimeoutMillis` bounded by `openMs`; `statement_timeout` and `lock_timeout`
 *   the store's statement limit), and the pool's `connect` listeners run on it as on every
 *   new client of the pool (session settings such as `search_path` set there apply to it
 *   as well).
 * - Opened in the background when an execution begins to hold a record ({@link use}): no
 *   execution waits for it, only a renewal that needs it, within its own time limit; a
 *   renewal after a failed opening tries again.
 * - Kept while executions hold records and ten seconds after the last; its socket is
 *   unref'd, so an idle renewal connection never keeps the process alive.
 * - A connection that reports an error, ends, or does not answer a statement within its time
 *   limit (node-postgres' `query_timeout`, which the store sets on every statement) is
 *   destroyed; the next statement opens another. Statements share it in node-postgres'
 *   queue, one round trip each.
 */
export class RenewalConnection implements Queryable {
  private client: Client | undefined;
  private opening: Promise<Client> | undefined;
  private users = 0;
  private inFlight = 0;
  private linger: ReturnType<typeof setTimeout> | undefined;

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
      // A renewal that needs it opens it again, within its own time limit.
    });
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.users--;
      this.idle();
    };
  }

  async query<R extends QueryResultRow = QueryResultRow>(
    config: QueryConfig,
  ): Promise<QueryResult<R>> {
    this.inFlight++;
    try {
      const client = await this.open();
      try {
        return await client.query<R>(config);
      } catch (error) {
        if (!answeredByServer(error)) this.destroy(client);
        throw error;
      }
    } finally {
      this.inFlight--;
      this.idle();
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
      // or runs past the store's limit, so it never holds the renewals queued behind it.
      statement_timeout: this.statementMs,
      lock_timeout: this.statementMs,
    });
    // Before anything can fail: an error event without a listener would crash the process.
    client.on('error', () => this.destroy(client));
    client.on('end', () => this.forget(client));
    try {
      await client.connect();
      // The pool's per-connection set-up (its listeners may query: those statements queue
      // before the first renewal).
      this.pool.emit('connect', client);
    } catch (error) {
      this.destroy(client);
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
    if (this.users > 0 || this.inFlight > 0 || this.linger !== undefined || !this.client) return;
    this.linger = setTimeout(() => {
      this.linger = undefined;
      if (this.users > 0 || this.inFlight > 0) return;
      const client = this.client;
      this.client = undefined;
      if (client) void client.end().catch(() => this.destroy(client));
    }, this.lingerMs);
    this.linger.unref?.();
  }

  private forget(client: Client): void {
    if (this.client === client) this.client = undefined;
  }

  private destroy(client: Client): void {
    this.forget(client);
    const socket = socketOf(client);
    if (socket) socket.destroy();
    else void client.end().catch(() => {});
  }
}
