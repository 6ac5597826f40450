import type { Client, Pool, PoolClient, QueryConfig, QueryResult, QueryResultRow } from 'pg';
import type { Queryable } from './pg-call.js';

/** How long the connection stays open after the last execution that held a record ended. */
export const LINGER_MS = 10_000;

/**
 * SQLSTATEs of a connection that ended or cannot go on: connection exceptions (08), a
 * shutdown or termination of the backend (57P), insufficient resources (53), system and
 * internal errors (58, XX), an idle-in-transaction timeout (25P03).
 */
const NO_ANSWER = /^(?:08|57P|53|58|XX|25P03)/;

/**
 * The server answered the statement: an error it reported with the connection still fine.
 * Not a FATAL or PANIC one, nor a connection exception (08) or a shutdown or termination of
 * the backend (57P01-57P05): those end the connection, the statement was not judged.
 */
export function answeredByServer(error: unknown): boolean {
  const reported = error as { severity?: unknown; code?: unknown } | null;
  const severity = reported?.severity;
  const code = reported?.code;
  return (
    typeof severity === 'string' &&
    typeof code === 'string' &&
    severity !== 'FATAL' &&
    severity !== 'PANIC' &&
    // By code as well: the severity is in the server's language (`lc_messages`).
    !NO_ANSWER.test(code)
  );
}

/** node-postgres gave up waiting for the answer (`query_timeout`): the connection may be fine. */
function timedOut(error: unknown): boolean {
  return (error as { message?: unknown } | null)?.message === 'Query read timeout';
}

/** node-postgres' socket of a client (absent in pg-native). */
function socketOf(client: Client): { destroy(): void; unref?(): void } | undefined {
  const stream = (client as { connection?: { stream?: { destroy?: unknown } } }).connection?.stream;
  return typeof stream?.destroy === 'function'
    ? (stream as { destroy(): void; unref?(): void })
    : undefined;
}

/** The own connection's sessions default to read committed (sent first, see `setUp`). */
const READ_COMMITTED = "SET default_transaction_isolation = 'read committed'";

/** How often a lingering connection checks whether its pool was ended. */
const LINGER_CHECK_MS = 200;
/**
 * After a failed opening, executions that begin do not open the own connection again for
 * this long, doubled on each failure in a row up to {@link OPEN_BACKOFF_MAX_MS} (a statement
 * that needs it still opens it): a server out of connections gets a few attempts a second,
 * not one per execution.
 */
const OPEN_BACKOFF_MS = 100;
const OPEN_BACKOFF_MAX_MS = 5_000;
/**
 * A statement with less of its limit left is not sent (it fails unsent): it could not be
 * answered in time, and its timeout would be taken for a silent connection.
 */
const MIN_SEND_MS = 10;
/**
 * A statement given less than this that times out on the own connection does not get the
 * connection destroyed: a busy event loop, not a silent server, is the likelier reason. A
 * connection that is silent indeed fails the next statement, given more.
 */
const SILENT_AFTER_MS = 100;
/** After a failed opening, one a waiting statement starts begins at least this long after it began. */
const ON_DEMAND_GAP_MS = 150;

/** A statement sent through the routes: sent once, or twice when it may be repeated. */
interface Job {
  config: QueryConfig;
  /** When its time limit (`query_timeout`) passes, counted from the call. */
  deadline: number;
  /** When it was called (`performance.now()`). */
  since: number;
  /**
   * May be sent again while a send of it is unanswered: a renewal, a termination that names
   * its transaction's id (never one by pid alone).
   */
  repeatable: boolean;
  /**
   * Waits behind every other statement (a final write of the plain store): never ahead of a
   * renewal or a termination, which keep other executions' leases and bounds.
   */
  deferred: boolean;
  /** Sent again already: it now waits for the own connection or a pool connection that just
   * opened, never an idle pool one. */
  again: boolean;
  /** Sends of it not answered yet. */
  inFlight: number;
  /** A new pool connection was opened in the background while it waited. */
  grown?: boolean;
  /** In the queue of the own connection. */
  queued: boolean;
  settled: boolean;
  /** What it fails with when every send failed: the server's answer first. */
  answer?: unknown;
  last?: unknown;
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

/** The routes of the statements that keep held records safe: `repeatable` for the renewals. */
export interface SideRoutes extends Queryable {
  /** For a statement that may run twice with the same effect (a held-lease renewal, an
   * xid-guarded termination). */
  readonly repeatable: Queryable;
}

/**
 * Where the transactional engine sends the statements that keep a held record safe while its
 * business transaction runs: the held-lease renewals, and the termination of a transaction's
 * backend at the maximum hold. When every connection of the pool is held by a long business
 * transaction (a pool sized to the concurrency, a burst of slow requests), a statement through
 * the pool would wait for a free one until its time limit, and the healthy owners' signals
 * would abort. So:
 * - **The engine's own connection first**, outside the pool, when it is open and free: the
 *   one connection known to be alive (an idle pool connection may be a flow a NAT dropped).
 * - **Else a free pool connection**, at once, when the pool has one and nobody waits for it
 *   (statements side by side, one slow statement never delaying the others). A renewal sent
 *   there that has no answer after a third of what was left of its limit, or that fails
 *   without the server's answer, is sent again on the own connection (a renewal may run
 *   twice: the held lease only moves forward); the first answer counts. So is one left
 *   unanswered by the own connection.
 * - **Else the own connection's queue**, in order. While statements wait there and the pool
 *   is below its size, new pool connections are opened in the background while the own one
 *   is busy, one per waiting statement: the first one free (the own connection or a new
 *   one) sends the next statement. No statement pays for opening a connection. A pool
 *   connection that comes back to the pool (a business transaction ended) takes the oldest
 *   waiting statement: it just answered, so it is known alive, and may take one sent again.
 *   Otherwise one sent again waits for the own connection or a pool connection that just
 *   opened, and never holds back a later one that may go to the pool.
 *
 * The own connection:
 * - Built as the pool builds its clients (`new pool.Client(pool.options)`: its options,
 *   PGOPTIONS and a connection string's apply as to the pool's; `statement_timeout` and
 *   `lock_timeout` the store's statement limit), `default_transaction_isolation` set to read
 *   committed first, whatever the sessions default to (a renewal never fails on a
 *   serialization conflict there), then set up by the pool's `onConnect` hook, `connect`
 *   listeners and `verify` hook as every new client of the pool, its `remove` listeners
 *   told when it is closed (session settings such as `search_path` made there apply to it
 *   as well); all of it within `openMs`.
 * - Opened in the background when an execution begins to hold a record ({@link use}): no
 *   execution waits for it; after a failed opening, not again for a while (100 ms, doubling
 *   up to 5 s while openings keep failing). An opening that fails fails every statement that
 *   was already waiting when it began (the opening was their attempt); a statement that came
 *   while it ran gets the next opening: one attempt per statement, at most two openings
 *   seen (three when a second opening ran beside a stalling one, see {@link grow}).
 * - Sends one statement at a time, each within what is left of its time limit (node-postgres'
 *   `query_timeout`, which the store sets on every statement): a limit counts from the call,
 *   and one that passes while the statement waits its turn fails that statement only
 *   ({@link NotSentError}), never the connection. A connection that ends, fails a statement
 *   without the server's answer (see `answeredByServer`) or leaves it unanswered within its
 *   limit is destroyed; the next statement opens another.
 * - Kept while executions hold records and ten seconds after the last, closed at once when
 *   the pool was ended and no execution holds a record; its socket is unref'd, so an idle
 *   renewal connection never keeps the process alive.
 */
export class RenewalConnection implements SideRoutes {
  private client: Client | undefined;
  private opening: Promise<Client> | undefined;
  private users = 0;
  /** Statements waiting for the own connection (or a new pool connection). */
  private readonly waiting: Job[] = [];
  private sending = false;
  private linger: ReturnType<typeof setTimeout> | undefined;
  /** When the running opening of the own connection began. */
  private openingBegan = 0;
  /** A second opening running ({@link hedge}), and the opening it was started for. */
  private hedging: Promise<Client> | undefined;
  private hedged: Promise<Client> | undefined;
  /** Openings running (at most two), and when the last one began. */
  private attempts = 0;
  private latestBegan = 0;
  /** Looks again for stalled openings ({@link grow}). */
  private growTimer: ReturnType<typeof setTimeout> | undefined;
  /** When {@link growTimer} fires. */
  private growDue = Number.POSITIVE_INFINITY;
  /** Failed openings in a row, and until when {@link use} opens nothing after them. */
  private failures = 0;
  private quietUntil = 0;
  /** The own connection kept after a short timeout, until it answers again (see sendOwn). */
  private suspect: Client | undefined;
  /** Gives up each opening running (see {@link connect}). */
  private readonly connecting = new Set<() => void>();
  /** Clients the pool's 'connect' listeners were told of. */
  private readonly announced = new WeakSet<Client>();

  readonly repeatable: Queryable = {
    query: <R extends QueryResultRow = QueryResultRow>(config: QueryConfig) =>
      this.submit<R>(config, true),
  };

  /**
   * For a statement sent once that waits behind every other one (the plain store's
   * completions when the pool would queue them): the renewals and terminations queued
   * meanwhile go first.
   */
  readonly deferred: Queryable = {
    query: <R extends QueryResultRow = QueryResultRow>(config: QueryConfig) =>
      this.submit<R>(config, false, true),
  };

  constructor(
    private readonly pool: Pool,
    /** Longest wait for a new connection to be ready (raised by {@link allowOpening}). */
    private openMs: number,
    /** The store's statement time limit, also set as the session's statement and lock timeouts. */
    private readonly statementMs: number,
    /** How long it stays open once no execution uses it. */
    private readonly lingerMs = LINGER_MS,
  ) {}

  /**
   * While statements wait: a connection back in the pool may take one (it is idle once the
   * pool's own release step ends, hence the tick). Listened to only while statements wait,
   * so that an idle store adds no listener to the pool.
   */
  private readonly onRelease = (error?: unknown, client?: unknown) => {
    if (this.waiting.length > 0) {
      // Given back without an error by a transaction that just used it: known alive, if the
      // pool kept it (it removes one at `maxUses`, expired or no longer queryable, after this
      // event). See `releasedAlive`.
      if (!error && client !== undefined) this.released = client;
      process.nextTick(() => this.dispatch());
    } else this.listenWhileWaiting();
  };
  /** The connection last given back without an error while statements waited. */
  private released: unknown;

  /**
   * A pool connection just came back alive and is the one `pool.connect()` hands out next (the
   * pool's idle list is a stack): the next dispatch may send one statement that was sent
   * again to the pool. Known only with pg-pool's idle list (`_idle`); otherwise never.
   */
  private releasedAlive(): boolean {
    const released = this.released;
    if (released === undefined) return false;
    const idle = (this.pool as unknown as { _idle?: unknown })._idle;
    if (!Array.isArray(idle) || idle.length === 0) return false;
    return (idle[idle.length - 1] as { client?: unknown } | undefined)?.client === released;
  }
  private listening = false;

  /** The pool's 'release' event listened to while statements wait, and only then. */
  private listenWhileWaiting(): void {
    const wanted = this.waiting.length > 0;
    if (wanted === this.listening) return;
    this.listening = wanted;
    if (wanted) this.pool.on('release', this.onRelease);
    else this.pool.off('release', this.onRelease);
  }

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
    if (this.client === undefined && performance.now() >= this.quietUntil) {
      this.open().catch(() => {
        // A statement that needs it opens it again, within its own time limit.
      });
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.users--;
      this.idle();
    };
  }

  /**
   * Lets an opening take up to `ms` from now on, when that is longer (a store's renewals for a
   * longer lease share a connection first opened for its final writes); never shortens it.
   */
  allowOpening(ms: number): void {
    if (ms > this.openMs) this.openMs = ms;
  }

  /** A statement sent once (the termination of a backend). */
  query<R extends QueryResultRow = QueryResultRow>(config: QueryConfig): Promise<QueryResult<R>> {
    return this.submit<R>(config, false);
  }

  private submit<R extends QueryResultRow>(
    config: QueryConfig,
    repeatable: boolean,
    deferred = false,
  ): Promise<QueryResult<R>> {
    const limit = Number((config as { query_timeout?: unknown }).query_timeout);
    return new Promise<QueryResult<R>>((resolve, reject) => {
      const since = performance.now();
      const job: Job = {
        config,
        deadline: limit > 0 ? since + limit : Number.POSITIVE_INFINITY,
        since,
        repeatable,
        deferred,
        again: false,
        inFlight: 0,
        queued: true,
        settled: false,
        resolve: resolve as Job['resolve'],
        reject,
      };
      // Ahead of the deferred ones (there are none in a store that sends no final writes).
      const queue = this.waiting;
      const at = deferred ? -1 : queue.findIndex((waiting) => waiting.deferred);
      if (at < 0) queue.push(job);
      else queue.splice(at, 0, job);
      this.dispatch();
    });
  }

  /** A free pool connection now, nobody waiting for one. */
  private poolFree(): boolean {
    const pool = this.pool;
    return !pool.ending && pool.idleCount > 0 && pool.waitingCount === 0;
  }

  /**
   * Sends what can be sent now; opens what the rest waits for. The own connection takes the
   * oldest statement; a free pool connection the oldest that may go to the pool (one sent
   * again waits for the own connection, a pool connection that just opened or one that was
   * just given back alive, without holding back those after it).
   */
  private dispatch(): void {
    const queue = this.waiting;
    let at = 0;
    while (at < queue.length) {
      const job = queue[at] as Job;
      if (job.settled) {
        queue.splice(at, 1);
        job.queued = false;
      } else if (job.deadline - performance.now() < MIN_SEND_MS) {
        queue.splice(at, 1);
        job.queued = false;
        this.failed(job, new NotSentError(), false);
      } else if (this.client !== undefined && !this.sending) {
        queue.splice(at, 1);
        job.queued = false;
        void this.sendOwn(this.client, job);
      } else if ((!job.again || this.releasedAlive()) && this.poolFree()) {
        if (job.again) this.released = undefined;
        queue.splice(at, 1);
        job.queued = false;
        this.sendPool(job);
      } else at++;
    }
    this.released = undefined;
    this.listenWhileWaiting();
    if (queue.length === 0) {
      this.idle();
      return;
    }
    if (this.client === undefined) {
      // Openings on demand are spaced too: after a failed opening the next one begins at
      // least ON_DEMAND_GAP_MS after it began (a server refusing connections gets a few
      // attempts a second, however many renewals fail and are retried meanwhile; one that
      // accepts again is tried within that gap, not after the executions' longer back-off;
      // an opening that took that long already is followed at once).
      const at = Math.min(this.quietUntil, this.latestBegan + ON_DEMAND_GAP_MS);
      if (this.opening !== undefined || performance.now() >= at) this.open().catch(() => {});
      else this.wakeAt(at);
    }
    this.grow();
  }

  /**
   * While the own connection is busy: a new pool connection in the background for each
   * waiting statement that has none opening yet, within the pool's size. While it is not open
   * yet: the same for each statement sent again (it takes no idle pool connection, and the
   * opening may stall past the lease), and for any other once the opening has run a third of
   * what the statement had left when it began to wait (a lost SYN, a stalled set-up; a
   * timer looks again then). Only while the pool has no idle connection: `pool.connect()`
   * would hand out an idle one, which may be a flow a NAT dropped, not a new one known alive.
   * When no new pool connection can be had (the pool at its size, or idle connections it
   * would hand out first) a statement past that point gets a second opening of the own
   * connection instead ({@link hedge}).
   * A connection is not tied to its statement: when it opens it sends whichever statement
   * waits then, so one that never opens (a pool without `connectionTimeoutMillis`, a server
   * that stays silent) costs one pool slot, as for any client of the pool, and holds back no
   * later statement.
   */
  private grow(): void {
    const ownOpen = this.client !== undefined;
    if (ownOpen && !this.sending) return;
    const pool = this.pool;
    const max = Number(pool.options.max) || 10;
    const now = performance.now();
    let later = Number.POSITIVE_INFINITY;
    for (const job of this.waiting) {
      if (job.settled) continue;
      const roomy =
        !pool.ending && pool.idleCount === 0 && pool.waitingCount === 0 && pool.totalCount < max;
      if (ownOpen) {
        if (job.grown) continue;
        if (!roomy) break;
      } else {
        if (this.opening === undefined) continue;
        // An opening that has run a third of what the statement had left when it began to
        // wait (a statement without a limit: of the opening's own limit) is stalling: a lost
        // SYN, a slow set-up. For a statement sent again, counted from the opening's start: its
        // first route just failed, and the opening has been running since before.
        const left = Math.min(job.deadline - job.since, this.openMs);
        const from = job.again ? this.openingBegan : Math.max(this.openingBegan, job.since);
        if (!roomy) {
          // A statement sent again while the pool has idle connections: its first send, on
          // one of them, went unanswered (or failed unanswered), so the others the pool would
          // hand out first may be dead flows as well (a NAT dropped them all): a new pool
          // connection past them, at once, as for a statement sent again in a pool without
          // idle ones (see `growPastIdle`).
          if (job.again && !job.grown && this.growPastIdle(max)) job.grown = true;
          // No new pool connection to be had (the pool at its size, or idle connections it
          // would hand out first, which may be dead flows), or it too may stall: a second
          // opening of the own one once the first has run a third of that time, counted from
          // its start (a renewal that comes late in a stalled opening must not wait a third
          // of its own time more: the lease may not last that long).
          const hedgeAt = this.openingBegan + left / 3;
          if (now >= hedgeAt) this.hedge();
          else later = Math.min(later, hedgeAt);
          continue;
        }
        if (job.grown) continue;
        const stalledAt = from + left / 3;
        const stalled = now >= stalledAt;
        if (!stalled) later = Math.min(later, stalledAt);
        if (!job.again && !stalled) continue;
      }
      job.grown = true;
      this.takeFresh(() => pool.connect());
    }
    this.wakeAt(later);
  }

  /**
   * A connection the pool opens (`open`: `pool.connect()` or, past its idle connections,
   * `newClient`), bounded ({@link bound}); known alive once open, it sends the next statement
   * waiting, a statement sent again included, and goes back to the pool.
   */
  private takeFresh(open: () => Promise<PoolClient>): void {
    const before = this.poolClients();
    const connecting = open();
    this.bound(connecting, before);
    connecting.then(
      (client) => {
        const next = this.nextWaiting();
        if (next) this.sendFresh(client, next);
        else client.release();
      },
      () => {},
    );
  }

  /**
   * A new pool connection although the pool has idle ones (which `pool.connect()` would hand
   * out first, and a statement sent again must not take: see {@link grow}), when the pool is
   * below its size and nobody waits for it: opened and set up by pg-pool itself
   * (`pool.newClient`, the step `connect()` takes when it has no idle connection: its options,
   * its `onConnect` hook, its `connect` and `acquire` events, its `verify` hook, its
   * `connectionTimeoutMillis`), so the application's pool sees what a `connect()` made then,
   * and none of its idle connections is checked out. False where it cannot be had (a pool
   * without that step, or no room): the statement keeps its other routes.
   */
  private growPastIdle(max: number): boolean {
    const pool = this.pool;
    const newClient = (pool as unknown as { newClient?: unknown }).newClient;
    if (typeof newClient !== 'function') return false;
    if (pool.ending || pool.waitingCount > 0 || pool.totalCount >= max) return false;
    this.takeFresh(
      () =>
        new Promise<PoolClient>((resolve, reject) => {
          // pg-pool's pending item: called once, with the client checked out (or the error).
          newClient.call(pool, {
            callback: (error: unknown, client: PoolClient | undefined) => {
              if (error || client === undefined) reject(error);
              else resolve(client);
            },
          });
        }),
    );
    return true;
  }

  /**
   * Looks at the queue again at `at` (or earlier, when already due sooner): the earliest of a
   * waiting statement's stall point ({@link grow}) and its time limit (it fails then, unsent,
   * not when something else dispatches the queue). One timer, moved earlier when a statement
   * needs it sooner.
   */
  private wakeAt(at: number): void {
    for (const job of this.waiting) if (!job.settled) at = Math.min(at, job.deadline);
    if (at === Number.POSITIVE_INFINITY || this.waiting.length === 0) return;
    if (this.growTimer !== undefined) {
      if (this.growDue <= at) return;
      clearTimeout(this.growTimer);
    }
    this.growDue = at;
    this.growTimer = setTimeout(
      () => {
        this.growTimer = undefined;
        this.growDue = Number.POSITIVE_INFINITY;
        this.dispatch();
      },
      Math.max(1, Math.min(at - performance.now(), 2 ** 31 - 1)),
    );
    this.growTimer.unref?.();
  }

  /**
   * A connection the pool opens for {@link grow}, given up after `openMs` when the pool has no
   * `connectionTimeoutMillis` of its own: else a silent server would keep it connecting as long
   * as TCP does, and `pool.end()` with it, for an attempt the application never made. (It is
   * the client pg-pool added last to its clients; a pool without that list is left alone.)
   */
  private bound(connecting: Promise<PoolClient>, before: readonly unknown[] | undefined): void {
    if (before === undefined) return;
    // The client the call added, and only when it added exactly one (a `connect()` wrapped to
    // reach the pool later adds none now: nothing is bounded then, never another client).
    const added = (this.poolClients() ?? []).filter((c) => !before.includes(c));
    if (added.length !== 1) return;
    const client = added[0] as Client;
    // While it connects its socket does not keep the process alive (an attempt the
    // application never made); once it is the pool's connection, it does as the pool's do.
    socketOf(client)?.unref?.();
    const options = this.pool.options as { connectionTimeoutMillis?: unknown };
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (!(Number(options.connectionTimeoutMillis) > 0)) {
      timer = setTimeout(() => {
        const still = this.poolClients()?.includes(client) ?? false;
        if (still && !(client as unknown as { _connected?: boolean })._connected)
          socketOf(client)?.destroy();
      }, this.openMs);
      timer.unref?.();
    }
    connecting.then(
      () => {
        clearTimeout(timer);
        const ref = (socketOf(client) as { ref?(): void } | undefined)?.ref;
        if (!(this.pool.options as { allowExitOnIdle?: unknown }).allowExitOnIdle)
          ref?.call(socketOf(client));
      },
      () => clearTimeout(timer),
    );
  }

  /** pg-pool's clients (its private list), or undefined for a pool without one. */
  private poolClients(): readonly unknown[] | undefined {
    const clients = (this.pool as unknown as { _clients?: unknown })._clients;
    return Array.isArray(clients) ? [...clients] : undefined;
  }

  /** The oldest statement still waiting (those whose limit passed fail, unsent). */
  private nextWaiting(): Job | undefined {
    const queue = this.waiting;
    while (queue.length > 0) {
      const job = queue.shift() as Job;
      job.queued = false;
      if (job.settled) continue;
      if (job.deadline - performance.now() >= MIN_SEND_MS) {
        this.listenWhileWaiting();
        return job;
      }
      this.failed(job, new NotSentError(), false);
    }
    this.listenWhileWaiting();
    this.idle();
    return undefined;
  }

  /** On a pool connection that just opened for it; back to the pool after. */
  private sendFresh(client: PoolClient, job: Job): void {
    job.inFlight++;
    // Checked out, a client has no error listener of the pool's.
    const absorb = () => {};
    client.on('error', absorb);
    client.query(this.timed(job)).then(
      (result) => {
        client.off('error', absorb);
        client.release();
        job.inFlight--;
        this.succeeded(job, result);
        this.dispatch();
      },
      (error: unknown) => {
        client.off('error', absorb);
        const answered = answeredByServer(error);
        client.release(answered ? undefined : (error as Error));
        job.inFlight--;
        if (!answered) this.sendAgain(job);
        this.failed(job, error, answered);
        this.dispatch();
      },
    );
  }

  private async sendOwn(client: Client, job: Job): Promise<void> {
    this.sending = true;
    job.inFlight++;
    const given = job.deadline - performance.now();
    // After a short timeout it was kept, but it may be silent indeed: a statement it leaves
    // unanswered for a third of its time has it destroyed (and is sent again when it may be).
    // A statement that may not run twice (a termination) is not probed: destroying the
    // connection would not stop the server from running it, and it would fail as not answered.
    let probe: ReturnType<typeof setTimeout> | undefined;
    if (this.suspect === client && job.repeatable) {
      probe = setTimeout(
        () => {
          if (this.suspect === client) this.destroy(client);
        },
        Math.max(1, given / 3),
      );
      probe.unref?.();
    }
    try {
      const result = await client.query(this.timed(job));
      clearTimeout(probe);
      if (this.suspect === client) this.suspect = undefined;
      job.inFlight--;
      this.succeeded(job, result);
    } catch (error) {
      clearTimeout(probe);
      job.inFlight--;
      const answered = answeredByServer(error);
      if (answered) {
        if (this.suspect === client) this.suspect = undefined;
      } else {
        if (given >= SILENT_AFTER_MS || !timedOut(error)) this.destroy(client);
        else this.suspectUntilAnswered(client);
        this.sendAgain(job);
      }
      this.failed(job, error, answered);
    } finally {
      this.sending = false;
      this.dispatch();
    }
  }

  /** On a free pool connection; a renewal unanswered for a third of its time is sent again. */
  private sendPool(job: Job): void {
    job.inFlight++;
    const config = this.timed(job);
    let timer: ReturnType<typeof setTimeout> | undefined;
    if (job.repeatable) {
      const left = Math.max(1, (job.deadline - performance.now()) / 3);
      timer = setTimeout(() => this.sendAgain(job), Math.min(left, 2 ** 31 - 1));
      timer.unref?.();
    }
    this.pool.query(config).then(
      (result) => {
        clearTimeout(timer);
        job.inFlight--;
        this.succeeded(job, result);
      },
      (error: unknown) => {
        clearTimeout(timer);
        job.inFlight--;
        const answered = answeredByServer(error);
        if (!answered) this.sendAgain(job);
        this.failed(job, error, answered);
      },
    );
  }

  /**
   * Kept after a short timeout: suspect until it answers again. node-postgres still reads the
   * late answer of the statement that timed out; the server's next "ready for query" is that
   * answer, and clears it.
   */
  private suspectUntilAnswered(client: Client): void {
    this.suspect = client;
    const connection = (client as unknown as { connection?: { once?: unknown } }).connection;
    if (typeof connection?.once !== 'function') return;
    (connection as { once(event: string, f: () => void): void }).once('readyForQuery', () => {
      if (this.suspect === client) this.suspect = undefined;
    });
  }

  /** A repeatable statement's second send, on the own connection, within what is left. */
  private sendAgain(job: Job): void {
    if (!job.repeatable || job.again || job.settled || job.queued) return;
    if (job.deadline - performance.now() < MIN_SEND_MS) return;
    job.again = true;
    job.queued = true;
    // Its wait for a second route starts now: an opening begun before was not its attempt.
    job.since = performance.now();
    this.waiting.unshift(job);
    this.dispatch();
  }

  /** The job's config with what is left of its limit. */
  private timed(job: Job): QueryConfig {
    if (job.deadline === Number.POSITIVE_INFINITY) return job.config;
    const left = Math.max(1, Math.floor(job.deadline - performance.now()));
    return { ...job.config, query_timeout: left } as QueryConfig;
  }

  private succeeded(job: Job, result: QueryResult<QueryResultRow>): void {
    if (job.settled) return;
    job.settled = true;
    if (job.queued) {
      const at = this.waiting.indexOf(job);
      if (at >= 0) this.waiting.splice(at, 1);
      job.queued = false;
      this.listenWhileWaiting();
    }
    job.resolve(result);
  }

  /** One send of it failed (or it expired unsent): it fails once no send of it is left. */
  private failed(job: Job, error: unknown, answered: boolean): void {
    if (job.settled) return;
    if (answered) job.answer ??= error;
    // Sent before, it fails with what that send met, never as "not sent".
    if (!(error instanceof NotSentError) || job.last === undefined) job.last = error;
    if (job.inFlight > 0 || job.queued) return;
    job.settled = true;
    job.reject(job.answer ?? job.last);
  }

  /**
   * The own connection, opened once at a time. When the opening fails, every statement that
   * was waiting when it began fails with the reason (the opening was their attempt), and the
   * next one opens again for those that came while it ran: an opening begun before them (by
   * {@link use}, or for earlier statements) may have been about to fail already.
   */
  private open(): Promise<Client> {
    if (this.client) return Promise.resolve(this.client);
    if (this.opening) return this.opening;
    const began = performance.now();
    this.openingBegan = began;
    this.opening = this.attempt(began);
    return this.opening;
  }

  /**
   * A second opening of the own connection while the running one stalls and a statement has
   * no other route (see {@link grow}): once per opening, so at most two run at a time. The
   * first to open is kept, the other given up at once (its connection destroyed).
   */
  private hedge(): void {
    const first = this.opening;
    if (first === undefined || this.hedged === first || this.attempts >= 2 || this.pool.ending)
      return;
    this.hedged = first;
    this.hedging = this.attempt(performance.now());
    this.hedging.catch(() => {});
  }

  /** One opening; the failure of the last one running fails the statements it was for. */
  private attempt(began: number): Promise<Client> {
    this.attempts++;
    this.latestBegan = began;
    const attempt: Promise<Client> = this.connect().then(
      (client) => {
        this.attempts--;
        if (this.hedging === attempt) this.hedging = undefined;
        if (this.opening === attempt) this.opening = undefined;
        if (this.client !== undefined) {
          // The other opening was first.
          this.close(client);
          return this.client;
        }
        this.client = client;
        // An opening still running is given up now (its connection destroyed): it would
        // count as running until its limit and hold back the next round's openings.
        this.opening = undefined;
        this.hedging = undefined;
        for (const cancel of [...this.connecting]) cancel();
        this.failures = 0;
        this.quietUntil = 0;
        this.dispatch();
        return client;
      },
      (error: unknown) => {
        this.attempts--;
        if (this.hedging === attempt) this.hedging = undefined;
        if (this.opening === attempt) {
          // The second opening, still running, is now the one statements wait for.
          this.opening = this.hedging;
          this.hedging = undefined;
          this.hedged = this.opening;
        }
        if (this.client !== undefined || this.attempts > 0) throw error;
        this.failures++;
        this.quietUntil =
          performance.now() +
          Math.min(OPEN_BACKOFF_MAX_MS, OPEN_BACKOFF_MS * 2 ** Math.min(this.failures - 1, 16));
        // Waiting when this opening or the one beside it began: it was their attempt.
        const attempted = this.waiting.filter(
          (job) => !job.settled && job.since <= this.latestBegan,
        );
        for (const job of attempted) {
          this.waiting.splice(this.waiting.indexOf(job), 1);
          job.queued = false;
          this.failed(job, error, false);
        }
        if (this.waiting.length > 0) this.dispatch();
        else this.listenWhileWaiting();
        throw error;
      },
    );
    return attempt;
  }

  /**
   * A new own connection, set up as the pool sets up its clients: its `onConnect` hook
   * (awaited), its `connect` listeners, its `verify` hook; all of it within `openMs`.
   */
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
    // Unref'd from the start: an opening that hangs never keeps the process alive.
    socketOf(client)?.unref?.();
    // Before anything can fail: an error event without a listener would crash the process.
    client.on('error', () => this.destroy(client));
    client.on('end', () => {
      this.forget(client);
      this.removed(client);
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const given = { up: false };
    let cancel: () => void = () => {};
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        given.up = true;
        reject(new Error(`The renewal connection was not set up within ${this.openMs} ms`));
      }, this.openMs);
      timer.unref?.();
      cancel = () => reject(new Error('The renewal connection was opened by another attempt'));
    });
    this.connecting.add(cancel);
    try {
      await Promise.race([this.setUp(client, given), limit]);
    } catch (error) {
      given.up = true;
      this.destroy(client);
      // A Client whose connect() comes later (an async step of its own first) would revive
      // the destroyed socket: a connection nobody owns. Closed as soon as it connects.
      const socket = socketOf(client) as { once?(event: string, f: () => void): void } | undefined;
      socket?.once?.('connect', () => socketOf(client)?.destroy());
      throw error;
    } finally {
      clearTimeout(timer);
      this.connecting.delete(cancel);
    }
    // Again: a TLS connection replaced the socket unref'd above.
    socketOf(client)?.unref?.();
    return client;
  }

  /**
   * Connects and runs the pool's set-up of a new client on it; a set-up given up (its time
   * passed) goes no further, so no listener hears of a client that was destroyed.
   */
  private async setUp(client: Client, given: { up: boolean }): Promise<void> {
    const hooks = this.pool.options as unknown as {
      onConnect?: (client: Client) => unknown;
      verify?: (client: Client, done: (error?: unknown) => void) => void;
    };
    await client.connect();
    if (given.up) return;
    // The store's functions are written for read committed: under a serializable default (the
    // role's, PGOPTIONS, the pool's `options`, a connection string's) a renewal could fail on a
    // conflict with any other key's statements. First, alone on the connection: the pool's
    // hooks below may still set another level, and theirs is then kept.
    await client.query(READ_COMMITTED);
    if (given.up) return;
    if (typeof hooks.onConnect === 'function') await hooks.onConnect(client);
    if (given.up) return;
    // Its listeners may query: those statements run before the first renewal. Its 'remove'
    // listeners hear of it when it is closed.
    this.announced.add(client);
    this.pool.emit('connect', client);
    const verify = hooks.verify;
    if (typeof verify === 'function') {
      await new Promise<void>((resolve, reject) => {
        verify(client, (error) => (error ? reject(error) : resolve()));
      });
    }
  }

  /**
   * Closes the connection once no execution used it for `lingerMs`, or at once when the pool
   * was ended (checked every {@link LINGER_CHECK_MS} while it lingers).
   */
  private idle(): void {
    const client = this.client;
    if (this.users > 0 || this.sending || this.waiting.length > 0 || !client) return;
    if (this.pool.ending) {
      if (this.linger !== undefined) clearTimeout(this.linger);
      this.linger = undefined;
      this.close(client);
      return;
    }
    if (this.linger !== undefined) return;
    const until = performance.now() + this.lingerMs;
    const check = (): void => {
      this.linger = undefined;
      if (this.users > 0 || this.sending || this.waiting.length > 0 || this.client !== client)
        return;
      const left = until - performance.now();
      if (left <= 0 || this.pool.ending) {
        this.close(client);
        return;
      }
      this.linger = setTimeout(check, Math.min(left, LINGER_CHECK_MS));
      this.linger.unref?.();
    };
    this.linger = setTimeout(check, Math.min(this.lingerMs, LINGER_CHECK_MS));
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
