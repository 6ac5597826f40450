import type { EventEmitter } from 'node:events';
import type { Pool, PoolClient } from 'pg';
import { NOW_MS, schemaObjects } from './schema-sql.js';
import type { TableName } from './table-name.js';

/**
 * A statement's first message at least this large is sent under an upload guard (see
 * {@link UploadGuard}). A smaller one is in the socket's buffers at once and reaches the
 * server within the idle limit on any link that carries the heartbeats.
 */
export const GUARDED_BYTES = 64 * 1024;

/**
 * The messages that can open a statement after a ReadyForQuery: Query (simple protocol),
 * Parse, or Bind (a named statement prepared before).
 */
const OPENING = new Set([0x51, 0x50, 0x42]);
/** The Query message (simple protocol). */
const QUERY = 0x51;

/**
 * Whether a Query message (`buffer`) is a `COPY ... FROM STDIN`: the server reads its data
 * with no idle timer, and however large it will be is not known when it opens (a stream of
 * CopyData messages, written by node-postgres or straight into the socket by
 * pg-copy-streams). Told by its first word (after blanks and comments, as a statement read
 * from a file has them) at the cost of a few byte comparisons for any other statement; the
 * rest of its text only for a COPY, and never for the COPY of a query (`COPY (SELECT ...) TO`,
 * whose first word a parenthesis follows: it cannot read from STDIN).
 */
function copiesIn(buffer: Buffer): boolean {
  // The text starts after the type byte and the length; it ends with a zero byte.
  const end = buffer.length - 1;
  const at = skipBlanks(buffer, 5, end);
  if (
    at + 4 > end ||
    ((buffer[at] as number) | 0x20) !== 0x63 ||
    ((buffer[at + 1] as number) | 0x20) !== 0x6f ||
    ((buffer[at + 2] as number) | 0x20) !== 0x70 ||
    ((buffer[at + 3] as number) | 0x20) !== 0x79
  )
    return false;
  // A longer word (`copy_rows()`), or the COPY of a query.
  if (wordByte(buffer[at + 4] as number)) return false;
  const next = skipBlanks(buffer, at + 4, end);
  if (buffer[next] === 0x28) return false;
  return /\bfrom\s+stdin\b/i.test(buffer.toString('latin1', next, end));
}

/** A byte an SQL word goes on with: a letter, a digit, `_`, `$`, or one of a multibyte character. */
function wordByte(byte: number): boolean {
  const lower = byte | 0x20;
  return (
    (lower >= 0x61 && lower <= 0x7a) ||
    (byte >= 0x30 && byte <= 0x39) ||
    byte === 0x5f ||
    byte === 0x24 ||
    byte >= 0x80
  );
}

/**
 * Where the SQL text of `buffer` from `at` (before `end`) goes on past blanks and comments
 * (`-- ...` to the line's end, and `/* ... *\/`, which nest in PostgreSQL).
 */
function skipBlanks(buffer: Buffer, at: number, end: number): number {
  while (at < end) {
    const byte = buffer[at] as number;
    if (byte === 0x20 || (byte >= 0x09 && byte <= 0x0d)) at++;
    else if (byte === 0x2d && buffer[at + 1] === 0x2d) {
      at += 2;
      while (at < end && buffer[at] !== 0x0a) at++;
    } else if (byte === 0x2f && buffer[at + 1] === 0x2a) {
      let depth = 1;
      at += 2;
      while (at < end && depth > 0) {
        if (buffer[at] === 0x2f && buffer[at + 1] === 0x2a) {
          depth++;
          at += 2;
        } else if (buffer[at] === 0x2a && buffer[at + 1] === 0x2f) {
          depth--;
          at += 2;
        } else at++;
      }
    } else break;
  }
  return at;
}

/**
 * The protocol's Flush message. The server disarms its idle timer once it has read a whole
 * message and arms it again only when it sends ReadyForQuery, which a Flush never causes: the
 * message after it is read with no idle timer at all.
 */
const FLUSH = Buffer.from([0x48, 0, 0, 0, 4]);

/** What the guard's server-side loop reports to the engine (a NOTICE). */
const ARMED = 'idem upload guard: armed';
const NOT_ARMED = 'idem upload guard: not armed';

/** node-postgres' protocol connection (absent in pg-native): the parts the guard uses. */
interface ProtocolConnection extends EventEmitter {
  _send(buffer: Buffer): boolean;
  flush(): void;
  stream: {
    writable?: boolean;
    write(buffer: Buffer): boolean;
    /** A net.Socket's (absent where node-postgres does not cork either). */
    writableCorked?: number;
    cork?(): void;
    uncork?(): void;
  };
}

function protocolOf(client: PoolClient): ProtocolConnection | undefined {
  const connection = (client as unknown as { connection?: Partial<ProtocolConnection> }).connection;
  return typeof connection?._send === 'function' &&
    typeof connection.flush === 'function' &&
    typeof connection.prependListener === 'function' &&
    typeof connection.stream?.write === 'function'
    ? (connection as ProtocolConnection)
    : undefined;
}

/** What a guard needs to know of the transaction it watches. */
export interface GuardedRecord {
  /** The row key of the record. */
  key: string;
  owner: string;
  fence: number;
  /** The backend's pid and the transaction's 64-bit id (`txid_current()`). */
  pid: number;
  xid: string;
}

/**
 * The guard's loop: a `DO` block run on another connection while the transaction's backend
 * reads one statement with no idle timer (its first message behind a Flush, or its later
 * messages: the server reads those with no idle timer at all). It reports `armed` once it
 * found the backend idle inside this transaction, read both leases and knows it may end that
 * backend (`pg_terminate_backend`'s own rule: the backend's role's privileges or
 * `pg_signal_backend`, and a superuser's backend only as a superuser; a role that merely sees
 * the backend, through `pg_read_all_stats`, is told `not armed`, so the statement goes under
 * the idle limit), then watches the statement while any of it may still be on its way: while
 * the backend waits for its first message (idle, as when the guard began), and while it reads
 * or runs the message it is `active` on (a Bind after its Parse, a `COPY`'s data: the backend
 * reports nothing while a message or a COPY's data arrives, so `state_change` stays that of
 * the first `active` the guard saw). It returns as soon as the backend moved on: to its
 * statement's next message or the next statement (`state_change` changed: whatever the
 * guard stood in for has arrived; a guard that went on polling through the statements after
 * it, which a 50 ms poll can see `active` back to back, piled one pool connection up per large
 * statement: the pgrev26 review), idle in its transaction again since the guard began (its
 * ReadyForQuery armed the server's idle timer), or out of the transaction; and it ends
 * the backend (by pid and transaction id, read again just before: `pg_stat_activity` is a
 * snapshot kept for the guard's whole transaction, and a lease read may have waited for a
 * lock meanwhile) once the record's lease and its held lease, as a takeover reads them,
 * passed `marginMs` ago: the owner stopped renewing (frozen, gone, cut off), as the idle
 * limit it stands in for would have found it silent. Values are spliced as literals:
 * `literal` MUST quote them (node-postgres' `escapeLiteral`); the pid, fence and ids are
 * checked integers.
 */
export function uploadGuardSql(
  name: TableName,
  record: GuardedRecord,
  marginMs: number,
  literal: (value: string) => string,
): string {
  if (!Number.isSafeInteger(record.fence)) throw new RangeError('fence must be a safe integer');
  if (!Number.isSafeInteger(record.pid)) throw new RangeError('pid must be a safe integer');
  if (!/^\d{1,20}$/.test(record.xid)) throw new RangeError('xid must be a transaction id');
  const o = schemaObjects(name);
  const key = literal(record.key);
  const owner = literal(record.owner);
  // pg_stat_activity shows the 32-bit transaction id.
  const xid32 = (BigInt(record.xid) % 2n ** 32n).toString();
  const margin = Math.max(0, Math.ceil(marginMs));
  // The tables first (a comment): pg_stat_activity keeps the first 1 KB of a statement's text
  // (track_activity_query_size), and an operator finds a table's guards by it.
  return `DO $idem_upload_guard$ -- ${o.table}, ${o.heldLeases}
DECLARE
  v_since timestamptz := clock_timestamp();
  v_state text;
  v_change timestamptz;
  v_xid text;
  v_role oid;
  v_lease bigint;
  v_held bigint;
  v_armed boolean := false;
  v_reading timestamptz;
BEGIN
  LOOP
    PERFORM pg_stat_clear_snapshot();
    SELECT state, state_change, backend_xid::text, usesysid INTO v_state, v_change, v_xid, v_role
    FROM pg_stat_activity WHERE pid = ${record.pid};
    IF NOT FOUND OR v_xid IS DISTINCT FROM '${xid32}' THEN
      IF NOT v_armed THEN RAISE NOTICE '${NOT_ARMED}'; END IF;
      RETURN;
    END IF;
    IF v_state LIKE 'idle in transaction%' THEN
      IF v_change > v_since THEN
        IF NOT v_armed THEN RAISE NOTICE '${NOT_ARMED}'; END IF;
        RETURN;
      END IF;
    ELSIF NOT v_armed OR v_state IS DISTINCT FROM 'active' THEN
      IF NOT v_armed THEN RAISE NOTICE '${NOT_ARMED}'; END IF;
      RETURN;
    ELSIF v_reading IS NULL THEN
      v_reading := v_change;
    ELSIF v_change IS DISTINCT FROM v_reading THEN
      RETURN;
    END IF;
    SELECT lease_until INTO v_lease FROM ${o.table}
    WHERE key = ${key} AND owner = ${owner} AND fence = ${record.fence} AND status = 'in_progress';
    SELECT lease_until INTO v_held FROM ${o.heldLeases}
    WHERE key = ${key} AND fence = ${record.fence};
    IF NOT v_armed THEN
      IF NOT coalesce(pg_has_role(v_role, 'USAGE') OR pg_has_role('pg_signal_backend', 'USAGE'), false)
          OR (coalesce((SELECT rolsuper FROM pg_roles WHERE oid = v_role), true)
            AND NOT coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = current_user), false)) THEN
        RAISE NOTICE '${NOT_ARMED}';
        RETURN;
      END IF;
      v_armed := true;
      RAISE NOTICE '${ARMED}';
    END IF;
    IF ${NOW_MS} >= greatest(coalesce(v_lease, 0), coalesce(v_held, 0)) + ${margin} THEN
      PERFORM pg_stat_clear_snapshot();
      PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE pid = ${record.pid} AND backend_xid::text = '${xid32}';
      RETURN;
    END IF;
    PERFORM pg_sleep(0.05);
  END LOOP;
END
$idem_upload_guard$`;
}

/**
 * Runs a guard (`sql`) on a pool connection taken at once (never waiting in the pool's queue:
 * the application's statements wait there, and the upload would wait behind them); resolves
 * `true` once it is armed, `false` when it could not be (no free connection, no answer within
 * `limitMs`, a failure, the backend not found idle in its transaction). The connection goes
 * back to the pool when the guard returns.
 */
export function armUploadGuard(pool: Pool, sql: string, limitMs: number): Promise<boolean> {
  const max = Number(pool.options.max) || 10;
  const free =
    !pool.ending && pool.waitingCount === 0 && (pool.idleCount > 0 || pool.totalCount < max);
  if (!free) return Promise.resolve(false);
  return new Promise<boolean>((resolve) => {
    let settled = false;
    const settle = (armed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(armed);
    };
    const timer = setTimeout(() => settle(false), limitMs);
    timer.unref?.();
    pool.connect().then(
      (client) => {
        if (settled) {
          client.release();
          return;
        }
        void guardOn(client, sql, settle);
      },
      () => settle(false),
    );
  });
}

/** The guard's statements on `client`, which goes back to the pool (dropped on a failure). */
async function guardOn(
  client: PoolClient,
  sql: string,
  settle: (armed: boolean) => void,
): Promise<void> {
  const onNotice = (notice: { message?: unknown }) => {
    if (notice.message === ARMED) settle(true);
    else if (notice.message === NOT_ARMED) settle(false);
  };
  const absorb = () => {};
  client.on('notice', onNotice);
  client.on('error', absorb);
  // No limit of the session's may end the loop (it lasts as long as the upload), and its
  // NOTICE must reach the client; all of it undone at COMMIT.
  const forever = 2 ** 31 - 1;
  try {
    // Read committed whatever the session defaults to: each of the loop's reads must see the
    // renewals committed meanwhile (one snapshot for the whole loop would see none).
    await client.query(
      'BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL client_min_messages = notice',
    );
    await client.query({ text: sql, query_timeout: forever } as never);
    await client.query('COMMIT');
    settle(false);
    client.off('notice', onNotice);
    client.off('error', absorb);
    client.release();
  } catch (error) {
    settle(false);
    client.off('notice', onNotice);
    client.release(error instanceof Error ? error : new Error(String(error)));
  }
}

/**
 * Keeps the server's idle limit from ending a healthy owner's transaction while one of its
 * statements is still on its way to the server. PostgreSQL arms the idle-in-transaction
 * timer when it sends ReadyForQuery and disarms it only once it has read the next message
 * whole: a statement's first message that takes longer than the idle limit to arrive (a
 * large simple query on a slow uplink) had the transaction ended mid-upload, although its
 * owner was alive and sending.
 *
 * So, while the transaction holds the record, a statement whose first message is at least
 * {@link GUARDED_BYTES} is held back until a guard runs on another connection (see
 * {@link uploadGuardSql}), then sent behind a Flush: the server reads it with no idle timer,
 * and the guard stands in for it, ending the transaction once the owner's leases passed (an
 * owner frozen or gone mid-upload), exactly when the idle limit would have found it silent.
 * No guard to be had (no free pool connection at once, no answer in time): the statement goes
 * as before, under the idle timer.
 *
 * The server reads a statement's later messages (a Bind after its Parse) with no idle timer
 * at all: one at least {@link GUARDED_BYTES} (a large parameter of an unnamed statement) had an
 * owner frozen or cut off mid-upload keep the record's row for as long as TCP kept its
 * connection. node-postgres writes an extended-protocol statement's messages into its socket
 * corked, and sends them at once when it uncorks: so a large later message whose statement
 * opened in that corked write (nothing of it sent yet) keeps the socket corked one step more,
 * the whole statement held in the socket's buffer while a guard is armed, as for a large first
 * message (the guard watches the statement until it has arrived, see {@link uploadGuardSql});
 * then it goes.
 * Smaller messages are sent as they come.
 */
export class UploadGuard {
  /** A ReadyForQuery came and nothing was sent since: the next message opens a statement. */
  private atReady = true;
  /**
   * The statement's first message was written into a corked socket: until it is uncorked,
   * nothing of the statement is on its way (see `send`).
   */
  private openedCorked = false;
  /** The socket is kept corked one step more while a guard is armed (see `send`). */
  private corkedByGuard = false;
  /** When the last ReadyForQuery came: the server's idle timer runs from about then. */
  private readyAt = performance.now();
  /** Messages held back while a guard is armed. */
  private held: Array<() => void> | undefined;
  private installed = false;
  private readonly onReady = () => {
    this.atReady = true;
    this.readyAt = performance.now();
  };
  /** The connection's own `_send` and `flush` properties before (none: its prototype's). */
  private readonly own: Array<[string, PropertyDescriptor | undefined]> = [];

  private constructor(
    private readonly connection: ProtocolConnection,
    private readonly arm: (limitMs: number) => Promise<boolean>,
    private readonly holdMs: number,
  ) {}

  /**
   * Installs a guard on the transaction's connection, right after its `BEGIN` answered (the
   * connection is at a ReadyForQuery); undefined where the client has no protocol connection
   * to watch (pg-native). `arm(limitMs)` must resolve within `limitMs`; a statement is held
   * for it at most until `holdMs` passed since the last ReadyForQuery (the server's idle
   * timer runs meanwhile: nothing was sent), then sent as it is.
   */
  static install(
    client: PoolClient,
    arm: (limitMs: number) => Promise<boolean>,
    holdMs: number,
  ): UploadGuard | undefined {
    const connection = protocolOf(client);
    if (!connection) return undefined;
    const guard = new UploadGuard(connection, arm, holdMs);
    // Ahead of node-postgres' own listener, which sends the next statement from it.
    connection.prependListener('readyForQuery', guard.onReady);
    for (const name of ['_send', 'flush'])
      guard.own.push([name, Object.getOwnPropertyDescriptor(connection, name)]);
    const send = connection._send;
    const flush = connection.flush;
    connection._send = (buffer: Buffer) => guard.send(buffer, () => send.call(connection, buffer));
    connection.flush = () => {
      if (guard.held) guard.held.push(() => flush.call(connection));
      else flush.call(connection);
    };
    guard.installed = true;
    return guard;
  }

  /**
   * The connection's own methods again: it goes back to the pool, or is dropped (`discard`:
   * what was held back is never sent).
   */
  uninstall(discard = false): void {
    if (!this.installed) return;
    this.installed = false;
    const connection = this.connection as unknown as Record<string, unknown>;
    for (const [name, before] of this.own) {
      if (before) Object.defineProperty(connection, name, before);
      else delete connection[name];
    }
    this.connection.off('readyForQuery', this.onReady);
    if (discard) this.held = undefined;
    // (A socket corked by the guard is uncorked either way: else the pool's end of a dropped
    // connection, written behind it, would never go. The statement in it never commits.)
    this.release(false);
  }

  private send(buffer: Buffer, write: () => boolean): boolean {
    if (this.held) {
      this.held.push(write);
      return true;
    }
    const stream = this.connection.stream;
    if (this.atReady) {
      this.atReady = false;
      // node-postgres corks an extended-protocol statement (Parse, Bind, ... Sync) and uncorks
      // after its last message: its later messages are written before anything is sent.
      this.openedCorked = (stream.writableCorked as number) > 0;
      if (
        (buffer.length < GUARDED_BYTES || !OPENING.has(buffer[0] as number)) &&
        (buffer[0] !== QUERY || !copiesIn(buffer))
      )
        return write();
      // Held while the idle timer runs: never past what is left of the idle limit.
      const left = this.holdMs - (performance.now() - this.readyAt);
      if (!(left > 0)) return write();
      this.held = [write];
      this.guard(left);
      return true;
    }
    if (buffer.length < GUARDED_BYTES || !this.openedCorked) return write();
    // A large later message (a Bind after its Parse), which the server would read with no
    // idle timer, of a statement opened in the write still corked: nothing of it was sent.
    this.openedCorked = false;
    if (!((stream.writableCorked as number) > 0) || typeof stream.uncork !== 'function')
      return write();
    const left = this.holdMs - (performance.now() - this.readyAt);
    if (!(left > 0)) return write();
    // One cork more: node-postgres' uncork after the statement's last message leaves the
    // socket corked, the statement in its buffer, until the guard answers.
    stream.cork?.();
    this.corkedByGuard = true;
    const written = write();
    this.guard(left);
    return written;
  }

  /** Arms a guard within `left`, then sends what it held back (see `release`). */
  private guard(left: number): void {
    let arming: Promise<boolean>;
    try {
      arming = this.arm(left);
    } catch {
      arming = Promise.resolve(false);
    }
    arming.then(
      (armed) => this.release(armed),
      () => this.release(false),
    );
  }

  /**
   * Sends what was held back: behind a Flush when a guard is armed (a statement's first
   * message: the server reads it with no idle timer then); or uncorks the socket, whose
   * buffer holds a whole statement (its small first message is read under the idle timer,
   * the rest with none).
   */
  private release(armed: boolean): void {
    if (this.corkedByGuard) {
      this.corkedByGuard = false;
      this.connection.stream.uncork?.();
    }
    const held = this.held;
    if (!held) return;
    this.held = undefined;
    if (armed && this.connection.stream.writable !== false) this.connection.stream.write(FLUSH);
    for (const write of held) write();
  }
}
