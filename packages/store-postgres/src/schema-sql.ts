import type { TableName } from './table-name.js';

/** Largest deadline the store writes: 2^53 - 1 ms, so every deadline reads back exactly in JS. */
export const MAX_DEADLINE = '9007199254740991';

/**
 * Longest wait of an acquire for the row of another owner's passed lease before it answers
 * "in progress": longer than a store statement holds a row, far shorter than a business
 * transaction may.
 */
export const HELD_ROW_WAIT = '100ms';

/** The database clock in epoch milliseconds (the time now, not the transaction's start). */
export const NOW_MS = 'floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint';

/** Longest wait of `ensureSchema()` for the table's lock, each time, to add the `origin` column. */
const ORIGIN_LOCK_WAIT = '100ms';
/** How many times `ensureSchema()` tries to add the `origin` column (about 1.5 s in all). */
const ORIGIN_TRIES = 5;

/**
 * The one statement that brings a table created before origins up to this version's
 * columns: what `ensureSchema()` runs when the table lacks the column. The functions must
 * be replaced too (run the whole schema again).
 */
export function originColumnSql(name: TableName): string {
  return `ALTER TABLE ${name.sql} ADD COLUMN IF NOT EXISTS origin text;`;
}

/** Names of the objects a table's schema consists of. */
export interface SchemaObjects {
  table: string;
  expiresIndex: string;
  acquire: string;
  complete: string;
  release: string;
  extend: string;
  hold: string;
  heldLeases: string;
  renewHeld: string;
}

export function schemaObjects(name: TableName): SchemaObjects {
  return {
    table: name.sql,
    expiresIndex: `"${name.table}_expires_at"`,
    acquire: name.sibling('_acquire'),
    complete: name.sibling('_complete'),
    release: name.sibling('_release'),
    extend: name.sibling('_extend'),
    hold: name.sibling('_hold'),
    heldLeases: name.sibling('_held_leases'),
    renewHeld: name.sibling('_renew_held'),
  };
}

/**
 * The start of every owner-checked function: the record under its row lock, the database
 * clock read after the lock, and `refused` returned when there is no record, it expired, or
 * another owner holds it (or `extra` holds).
 */
function lockOwnRecord(o: SchemaObjects, refused: string, extra = ''): string {
  return `  SELECT * INTO r FROM ${o.table} WHERE key = p_key FOR UPDATE;
  IF NOT FOUND THEN
    RETURN ${refused};
  END IF;
  v_now := ${NOW_MS};
  IF v_now >= r.expires_at OR r.owner <> p_owner${extra} THEN
    RETURN ${refused};
  END IF;
`;
}

/**
 * The whole schema for one table: the table, the index that keeps the cleanup of expired
 * records cheap, and the four functions that make acquire, complete, release and extend one
 * statement each. Idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE`), and serialised by an
 * advisory lock so that two processes running it at once do not collide. This is exactly
 * what `sql/schema.sql` holds for the default table (a test keeps the two equal).
 *
 * Why functions: acquire must read the record and decide on the database clock after it
 * holds the row lock, and answer with the record it found or the one it wrote, old values
 * included (was it a takeover? the fence before?). PL/pgSQL runs each statement of the
 * function with a fresh snapshot under READ COMMITTED, so a row another acquire inserted a
 * moment ago is seen on the next read; one statement of plain SQL cannot see it.
 */
export function schemaSql(name: TableName): string {
  const o = schemaObjects(name);
  const lock = `'idem-schema:${name.text}'`;
  return `-- @idem/store-postgres schema for ${name.text}. Safe to run again.
-- Times are epoch milliseconds by the database clock (clock_timestamp()).
SELECT pg_advisory_xact_lock(hashtext(${lock}));
${name.schema ? `CREATE SCHEMA IF NOT EXISTS "${name.schema}";\n` : ''}
CREATE TABLE IF NOT EXISTS ${o.table} (
  key         text COLLATE "C" PRIMARY KEY,
  status      text   NOT NULL CHECK (status IN ('in_progress', 'completed', 'released')),
  fingerprint text   NOT NULL,
  owner       text   NOT NULL,
  fence       bigint NOT NULL,
  lease_until bigint NOT NULL,
  expires_at  bigint NOT NULL,
  outcome     bytea,
  origin      text
);

-- The owner token of the acquisition that began the record's logical request (NULL in a row
-- an earlier version wrote: its owner counts as its origin). A table created by a version
-- before origins gains the column here, only when it lacks it: ALTER TABLE takes an ACCESS
-- EXCLUSIVE lock even with IF NOT EXISTS, and a run at every start would queue every store
-- statement behind the transactions that use the table. When it does run (once), it waits
-- at most ${ORIGIN_LOCK_WAIT} at a time for those transactions, ${ORIGIN_TRIES} times, so that the store's
-- statements queued behind it are held up no longer, then fails with what to do. Adding a
-- nullable column without a default rewrites nothing.
DO $do$
DECLARE
  v_lock_timeout text := current_setting('lock_timeout');
  v_tries int := 0;
BEGIN
  IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '${o.table}'::regclass
      AND attname = 'origin' AND NOT attisdropped) THEN
    RETURN;
  END IF;
  LOOP
    BEGIN
      PERFORM set_config('lock_timeout', '${ORIGIN_LOCK_WAIT}', true);
      ALTER TABLE ${o.table} ADD COLUMN IF NOT EXISTS origin text;
      PERFORM set_config('lock_timeout', v_lock_timeout, true);
      RETURN;
    EXCEPTION WHEN lock_not_available THEN
      v_tries := v_tries + 1;
      IF v_tries >= ${ORIGIN_TRIES} THEN
        RAISE EXCEPTION 'idem: could not add the column origin to %: transactions on the table kept it locked; run ensureSchema() again, or at a quiet moment: ${originColumnSql(name)}', '${name.text}'
          USING ERRCODE = 'lock_not_available',
            HINT = 'Then run the whole schema script (ensureSchema() or sql/schema.sql): its functions write the column.';
      END IF;
      PERFORM pg_sleep(0.1 * v_tries);
    END;
  END LOOP;
END
$do$;

-- Keeps deleteExpired() (DELETE ... WHERE expires_at < cutoff) an index range scan.
-- Created only when the table lacks it: CREATE INDEX IF NOT EXISTS takes a SHARE lock on
-- the table even when the index exists, so a run at a process start would wait for every
-- transaction writing the table, and every store write would queue behind it.
DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
      WHERE i.indrelid = '${o.table}'::regclass AND c.relname = '${name.table}_expires_at') THEN
    CREATE INDEX IF NOT EXISTS ${o.expiresIndex} ON ${o.table} (expires_at);
  END IF;
END
$do$;

-- The leases of records whose row a business transaction of the transactional engine holds
-- (createPostgresIdempotency): renewed through the pool while the transaction runs (the
-- record's own row is locked by it), and honoured by a takeover, so that a transaction ended
-- by anything (a killed backend, a proxy, an idle limit) does not let a duplicate in before
-- the owner's last renewal has passed. A row counts for its record's fence only.
CREATE TABLE IF NOT EXISTS ${o.heldLeases} (
  key         text COLLATE "C" PRIMARY KEY,
  fence       bigint NOT NULL,
  lease_until bigint NOT NULL
);

-- Takes the record, or answers the live record that prevents it. The first read takes no
-- lock: a live record that is not the caller's own (a replay, a conflict) is answered
-- without writing anything. Everything else is decided again under the row lock; a record
-- in progress whose row another transaction holds (its business transaction) is answered
-- as in progress after ${HELD_ROW_WAIT}.
-- An acquired answer carries the record's origin in o_owner (a found one, the record's
-- owner): the columns stay those of the version before origins, so that a process of that
-- version still running keeps its prepared statement (a changed result type fails it).
-- The origin is the caller's own token when the key was free (no record, or an expired
-- one, an admin delete's tombstone included); a takeover and the acquisition of a released
-- tombstone within its retention carry the record's over (a row written before origins:
-- its owner); a redelivery answers it.
CREATE OR REPLACE FUNCTION ${o.acquire}(
  p_key text, p_fingerprint text, p_owner text, p_lease_ms bigint, p_retention_ms bigint,
  OUT o_acquired boolean, OUT o_takeover boolean, OUT o_now bigint, OUT o_status text,
  OUT o_fingerprint text, OUT o_owner text, OUT o_fence bigint, OUT o_lease_until bigint,
  OUT o_expires_at bigint, OUT o_outcome bytea)
LANGUAGE plpgsql AS $fn$
DECLARE
  r ${o.table}%ROWTYPE;
  found_row boolean;
  attempt int := 0;
  v_lock_timeout text := current_setting('lock_timeout');
  v_held_fence bigint;
  v_held_until bigint;
BEGIN
  SELECT * INTO r FROM ${o.table} WHERE key = p_key;
  found_row := FOUND;
  o_now := ${NOW_MS};
  LOOP
    IF found_row AND o_now < r.expires_at AND (r.status = 'completed' OR
        (r.status = 'in_progress' AND o_now < r.lease_until AND r.owner <> p_owner)) THEN
      o_acquired := false;
      o_takeover := false;
      o_status := r.status;
      o_fingerprint := r.fingerprint;
      o_owner := r.owner;
      o_fence := r.fence;
      o_lease_until := r.lease_until;
      o_expires_at := r.expires_at;
      o_outcome := r.outcome;
      RETURN;
    END IF;
    attempt := attempt + 1;
    IF attempt > 10 THEN
      RAISE EXCEPTION 'idem acquire of % gave up: the record keeps changing', p_key;
    END IF;
    IF found_row AND r.status = 'in_progress' AND r.owner <> p_owner THEN
      -- Another owner's passed lease. Its business transaction may hold the row for as long
      -- as it runs (and renews nothing meanwhile): wait only as long as a store statement
      -- holds a row (another takeover, the owner's complete), then answer in progress. The
      -- setting is undone with the block (on error) or right after the lock.
      BEGIN
        PERFORM set_config('lock_timeout', '${HELD_ROW_WAIT}', true);
        SELECT * INTO r FROM ${o.table} WHERE key = p_key FOR UPDATE;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
      EXCEPTION WHEN lock_not_available THEN
        o_acquired := false;
        o_takeover := false;
        o_status := r.status;
        o_fingerprint := r.fingerprint;
        o_owner := r.owner;
        o_fence := r.fence;
        -- Not renewed while the row is held: a hint as if it had just been.
        o_lease_until := least(greatest(r.lease_until, o_now + p_lease_ms), ${MAX_DEADLINE});
        o_expires_at := r.expires_at;
        o_outcome := r.outcome;
        RETURN;
      END;
    ELSE
      SELECT * INTO r FROM ${o.table} WHERE key = p_key FOR UPDATE;
    END IF;
    found_row := FOUND;
    o_now := ${NOW_MS};
    o_lease_until := least(o_now + p_lease_ms, ${MAX_DEADLINE});
    o_expires_at := least(o_lease_until + p_retention_ms, ${MAX_DEADLINE});
    o_takeover := false;
    IF NOT found_row THEN
      INSERT INTO ${o.table} (key, status, fingerprint, owner, fence, lease_until, expires_at,
        origin)
      VALUES (p_key, 'in_progress', p_fingerprint, p_owner, 1, o_lease_until, o_expires_at,
        p_owner)
      ON CONFLICT (key) DO NOTHING;
      IF FOUND THEN
        o_acquired := true;
        o_fence := 1;
        o_owner := p_owner;
        RETURN;
      END IF;
      -- Another acquire inserted it first; the next read (a new snapshot) sees it.
      CONTINUE;
    END IF;
    -- An empty origin (no store writes one: by hand, or corrupted) would be carried into
    -- every later acquisition of the record: refused before anything is written.
    IF r.origin = '' AND o_now < r.expires_at THEN
      RAISE EXCEPTION 'idem: malformed record % (an empty origin, not written by a store): left as it is', p_key;
    END IF;
    IF r.status = 'in_progress' AND r.owner = p_owner AND o_now < r.expires_at THEN
      -- This very acquisition, delivered again: same fence, lease renewed.
      o_expires_at := greatest(r.expires_at, o_expires_at);
      UPDATE ${o.table} SET lease_until = o_lease_until, expires_at = o_expires_at
      WHERE key = p_key;
      o_acquired := true;
      o_fence := r.fence;
      o_owner := coalesce(r.origin, r.owner);
      RETURN;
    END IF;
    IF r.status = 'in_progress' AND r.owner <> p_owner
        AND (o_now >= r.lease_until OR o_now >= r.expires_at) THEN
      -- Another owner's passed lease, its row free: its lease renewed while a business
      -- transaction held the row still counts. The lease row is taken under lock (inserted if absent), so
      -- a renewal on its way either committed before (and is seen) or waits for this
      -- statement and then finds the record taken over.
      INSERT INTO ${o.heldLeases} AS h (key, fence, lease_until) VALUES (p_key, r.fence, 0)
      ON CONFLICT (key) DO UPDATE SET lease_until = h.lease_until
      RETURNING h.fence, h.lease_until INTO v_held_fence, v_held_until;
      IF v_held_fence = r.fence AND ${NOW_MS} < v_held_until THEN
        o_acquired := false;
        o_status := r.status;
        o_fingerprint := r.fingerprint;
        o_owner := r.owner;
        o_fence := r.fence;
        o_lease_until := v_held_until;
        o_expires_at := greatest(r.expires_at, least(v_held_until + p_retention_ms, ${MAX_DEADLINE}));
        o_outcome := r.outcome;
        RETURN;
      END IF;
      -- Marked with the fence this takeover is about to write (never deleted): a renewal
      -- racing it then meets this row changed (it waits for it, or fails to serialise under
      -- repeatable read and is retried with a fresh snapshot) and never answers as the owner.
      UPDATE ${o.heldLeases} SET fence = r.fence + 1, lease_until = 0 WHERE key = p_key;
    END IF;
    IF r.status = 'released' OR o_now >= r.expires_at
        OR (r.status = 'in_progress' AND o_now >= r.lease_until) THEN
      o_owner := CASE WHEN o_now < r.expires_at THEN coalesce(r.origin, r.owner) ELSE p_owner END;
      UPDATE ${o.table} SET status = 'in_progress', fingerprint = p_fingerprint,
        owner = p_owner, fence = r.fence + 1, lease_until = o_lease_until,
        expires_at = o_expires_at, outcome = NULL, origin = o_owner
      WHERE key = p_key;
      o_acquired := true;
      o_takeover := r.status = 'in_progress' AND o_now < r.expires_at;
      o_fence := r.fence + 1;
      RETURN;
    END IF;
    -- Live and not ours: answered at the top of the loop.
  END LOOP;
END
$fn$;

-- Records the outcome if the caller still owns the in-progress record. A repeat of the
-- caller's own completion (same owner, same bytes) answers true and changes nothing.
CREATE OR REPLACE FUNCTION ${o.complete}(
  p_key text, p_owner text, p_outcome bytea, p_retention_ms bigint)
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
  r ${o.table}%ROWTYPE;
  v_now bigint;
BEGIN
${lockOwnRecord(o, 'false')}  IF r.status = 'in_progress' THEN
    UPDATE ${o.table} SET status = 'completed', outcome = p_outcome,
      expires_at = least(v_now + p_retention_ms, ${MAX_DEADLINE})
    WHERE key = p_key;
    RETURN true;
  END IF;
  RETURN r.status = 'completed' AND r.outcome = p_outcome;
END
$fn$;

-- Gives the key up (a tombstone that keeps the fence) if the caller still owns the
-- in-progress record. A repeat of the caller's own release answers true.
CREATE OR REPLACE FUNCTION ${o.release}(p_key text, p_owner text, p_retention_ms bigint)
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
  r ${o.table}%ROWTYPE;
  v_now bigint;
BEGIN
${lockOwnRecord(o, 'false')}  IF r.status = 'in_progress' THEN
    UPDATE ${o.table} SET status = 'released', outcome = NULL,
      expires_at = least(v_now + p_retention_ms, ${MAX_DEADLINE})
    WHERE key = p_key;
    RETURN true;
  END IF;
  RETURN r.status = 'released';
END
$fn$;

-- Renews the lease if the caller still owns the in-progress record; answers the new lease
-- deadline, or NULL when it changed nothing.
CREATE OR REPLACE FUNCTION ${o.extend}(
  p_key text, p_owner text, p_lease_ms bigint, p_retention_ms bigint)
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
  r ${o.table}%ROWTYPE;
  v_now bigint;
  v_lease bigint;
BEGIN
${lockOwnRecord(o, 'NULL', " OR r.status <> 'in_progress'")}  v_lease := least(v_now + p_lease_ms, ${MAX_DEADLINE});
  UPDATE ${o.table} SET lease_until = v_lease,
    expires_at = greatest(r.expires_at, least(v_lease + p_retention_ms, ${MAX_DEADLINE}))
  WHERE key = p_key;
  RETURN v_lease;
END
$fn$;

-- Renews the lease of a record whose row the caller's business transaction holds (through
-- another connection: the record's row is locked): answers the new deadline, or NULL when
-- the record is no longer the caller's acquisition (or the lease would outlive its expiry).
-- The lease row first, under lock, then the record: a takeover racing it either waits for
-- this renewal and honours it, or changed the
-- lease row first (its fence is then newer: nothing is renewed), in which case this statement
-- waited for it and reads the record afresh (read committed), or failed to serialise (40001,
-- repeatable read or serializable sessions) and is sent again. It waits at most
-- ${HELD_ROW_WAIT} for the lease row (a takeover or a clean-up holds it for one short statement):
-- a row some other session keeps locked fails this renewal alone (55P03), at once, never the
-- statements sent after it. The same renewal may arrive twice (sent again on another
-- connection when the first went unanswered): the lease of one acquisition only moves forward.
CREATE OR REPLACE FUNCTION ${o.renewHeld}(
  p_key text, p_owner text, p_fence bigint, p_lease_ms bigint)
RETURNS bigint
LANGUAGE plpgsql
SET lock_timeout = '${HELD_ROW_WAIT}'
AS $fn$
DECLARE
  r ${o.table}%ROWTYPE;
  v_lease bigint := least(${NOW_MS} + p_lease_ms, ${MAX_DEADLINE});
BEGIN
  INSERT INTO ${o.heldLeases} AS h (key, fence, lease_until) VALUES (p_key, p_fence, v_lease)
  ON CONFLICT (key) DO UPDATE SET fence = EXCLUDED.fence,
    lease_until = CASE WHEN h.fence = EXCLUDED.fence
      THEN greatest(h.lease_until, EXCLUDED.lease_until) ELSE EXCLUDED.lease_until END
  WHERE h.fence <= EXCLUDED.fence OR h.lease_until < ${NOW_MS};
  IF NOT FOUND THEN
    -- A live lease of a later fence: nothing renewed.
    RETURN NULL;
  END IF;
  SELECT * INTO r FROM ${o.table} WHERE key = p_key;
  IF NOT FOUND OR r.status <> 'in_progress' OR r.owner <> p_owner OR r.fence <> p_fence THEN
    DELETE FROM ${o.heldLeases} WHERE key = p_key AND fence = p_fence;
    RETURN NULL;
  END IF;
  IF v_lease > r.expires_at THEN
    -- Never past the record's expiry (its row is locked, so it cannot move): a held lease
    -- then always passes before deleteExpired may remove the record. Not renewed.
    UPDATE ${o.heldLeases} SET lease_until = r.expires_at WHERE key = p_key AND fence = p_fence;
    RETURN NULL;
  END IF;
  RETURN v_lease;
END
$fn$;

-- For a serializable business transaction: holds the record's row by its tuple id (read
-- beforehand, outside that transaction) while it is still the caller's, and answers its fence
-- (NULL when it is not). A tuple id scan leaves a predicate lock on this one row, where a
-- look-up by key would leave one on a whole page of the primary key's index, which every
-- other serializable completion writing into that page would conflict with.
CREATE OR REPLACE FUNCTION ${o.hold}(p_tid tid, p_key text, p_owner text, p_fence bigint)
RETURNS bigint
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_indexscan = off
AS $fn$
DECLARE
  v_fence bigint;
BEGIN
  SELECT fence INTO v_fence FROM ${o.table}
  WHERE ctid = p_tid AND key = p_key AND owner = p_owner AND fence = p_fence
    AND status = 'in_progress' AND expires_at > ${NOW_MS}
  FOR UPDATE;
  RETURN v_fence;
END
$fn$;
`;
}
