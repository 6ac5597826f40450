import type pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { makePool, randomName } from './pg-env.js';

/** Helpers of the upload guard's reviews (pgrev25, pgrev26). */

/**
 * A schema of the file's own (`<prefix>_<random>`): the store's tables and a table of business
 * rows (`charges`: id, scope, fence), made before the file's tests and dropped after them,
 * once every backend of `app` (the file's pools' application_name) was ended. `raw` is a pool
 * of `max` for the file's own reads.
 */
export function reviewSchema(prefix: string, app: string, max: number) {
  const schema = randomName(prefix);
  const table = `${schema}.records`;
  const charges = `${schema}.charges`;
  const raw = makePool({ max, application_name: app });
  beforeAll(async () => {
    await raw.query(`CREATE SCHEMA ${schema}`);
    await createPostgresStore({ pool: raw, table }).ensureSchema();
    await raw.query(
      `CREATE TABLE ${charges} (id bigserial PRIMARY KEY, scope text NOT NULL, fence bigint NOT NULL)`,
    );
  });
  afterAll(async () => {
    // Nothing of the file left running (a stuck upload of a finding's test).
    await raw.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE '${app}%' AND pid <> pg_backend_pid()`,
    );
    await raw.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await raw.end();
  });
  /** An engine on `pool` for the schema's table (lease 2 s, heartbeats every 400 ms). */
  function engineOn(
    pool: pg.Pool,
    keyPrefix: string,
    extra: { leaseMs?: number; heartbeatMs?: number; statementTimeoutMs?: number } = {},
  ) {
    const { statementTimeoutMs, ...core } = extra;
    return createPostgresIdempotency<string>({
      store: createPostgresStore({ pool, table, keyPrefix, statementTimeoutMs }),
      leaseMs: 2_000,
      heartbeatMs: 400,
      maxHoldMs: 60_000,
      ...core,
    });
  }
  /**
   * An engine on a direct pool of `max` connections (keys prefixed `prefix`), the guards armed
   * on that pool counted, and a scope of its own.
   */
  function onDirectPool(max: number, prefix: string) {
    const pool = makePool({ max, application_name: app });
    return {
      pool,
      counts: countArmed(pool),
      scope: randomName('scope'),
      engine: engineOn(pool, randomName(prefix)),
    };
  }
  return { schema, table, charges, raw, engineOn, onDirectPool };
}

/** Counts the guards armed on `pool` (their NOTICE on the connection that ran them). */
export function countArmed(pool: pg.Pool): { armed: number; acquired: number } {
  const counts = { armed: 0, acquired: 0 };
  const heard = new WeakSet<object>();
  pool.on('acquire', (client) => {
    counts.acquired++;
    if (heard.has(client)) return;
    heard.add(client);
    client.on('notice', (notice: { message?: string }) => {
      if (notice.message === 'idem upload guard: armed') counts.armed++;
    });
  });
  return counts;
}

/** node-postgres' protocol connection: what a COPY's submittable sends on. */
interface CopyConnection {
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): void;
  endCopyFrom(): void;
}

/**
 * `COPY <table> FROM STDIN` (or `text`) of `data` on `tx`, its CopyData sent as one message by
 * node-postgres (as pg-copy-streams sends its chunks); resolves at its ReadyForQuery.
 */
export function copyIn(
  tx: pg.PoolClient,
  table: string,
  data: Buffer,
  text = `COPY ${table} FROM STDIN`,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let failed: unknown;
    const submittable = {
      submit: (connection: CopyConnection) => connection.query(text),
      handleCopyInResponse: (connection: CopyConnection) => {
        connection.sendCopyFromChunk(data);
        connection.endCopyFrom();
      },
      handleError: (error: unknown) => {
        failed ??= error;
        reject(error);
      },
      handleReadyForQuery: () => (failed ? reject(failed) : resolve()),
      handleCommandComplete: () => {},
      handleRowDescription: () => {},
      handleDataRow: () => {},
      handleEmptyQuery: () => {},
      handlePortalSuspended: () => {},
      handleCopyData: () => {},
    };
    (tx as unknown as { query(s: unknown): unknown }).query(submittable);
  });
}

/** `lines` lines of `width` characters each (a text COPY's data). */
export const copyLines = (lines: number, width: number) =>
  Buffer.from(`${'y'.repeat(width)}\n`.repeat(lines));
