/**
 * A PostgreSQL of the test file's own (every process SIGSTOPped by PID to freeze it, never
 * the shared server), with a pool of 4, the idem schema and a `business (k, run)` table;
 * and a freeze of it timed to one statement sent on a business transaction's client.
 */
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { type PostgresServer, startPostgres } from '../../../apps/chaos/src/postgres-server.js';
import { createPostgresStore, recommendedPoolConfig } from '../src/index.js';

export interface OwnPostgres {
  readonly server: PostgresServer;
  readonly pool: pg.Pool;
}

/** Starts the server before the file's tests (pool statement limit `statementTimeoutMs`), stops it after. */
export function ownPostgresWithBusiness(statementTimeoutMs: number): OwnPostgres {
  let server: PostgresServer | undefined;
  let pool: pg.Pool | undefined;
  beforeAll(async () => {
    server = await startPostgres();
    pool = new pg.Pool({
      connectionString: server.url,
      ...recommendedPoolConfig({ statementTimeoutMs }),
      max: 4,
    });
    pool.on('error', () => {});
    await createPostgresStore({ pool }).ensureSchema();
    await pool.query('CREATE TABLE business (k text NOT NULL, run int NOT NULL)');
  }, 60_000);
  afterAll(async () => {
    server?.thaw();
    await pool?.end().catch(() => {});
    await server?.close();
  });
  return {
    get server() {
      if (!server) throw new Error('the own PostgreSQL is not started yet');
      return server;
    },
    get pool() {
      if (!pool) throw new Error('the own PostgreSQL is not started yet');
      return pool;
    },
  };
}

type Query = (...args: unknown[]) => unknown;
const textOf = (config: unknown) =>
  typeof config === 'string' ? config : (config as { text?: string } | undefined)?.text;

/** Freezes `server` for `frozenMs` as the first statement `at` picks goes out on `tx`. */
export function freezeAt(
  server: PostgresServer,
  tx: unknown,
  at: (text: string | undefined) => boolean,
  frozenMs: number,
): void {
  const client = tx as { query: Query };
  const query = client.query;
  client.query = function (this: unknown, ...args: unknown[]) {
    if (at(textOf(args[0]))) {
      client.query = query;
      server.freeze();
      setTimeout(() => server.thaw(), frozenMs);
    }
    return query.apply(this, args);
  };
}
