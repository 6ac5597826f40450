/**
 * outage31: the transactional engine with its server frozen (SIGSTOP of every process of a
 * PostgreSQL this file owns) at the moment it sends `COMMIT`: briefly (the answer comes late)
 * and for twice the lease (every statement of the engine's settling times out meanwhile).
 * Either way the business rows and the record agree once the server is back: exactly one row
 * for the key, written by the run whose value every later call gets. Passes on the source
 * before outage31 (a pin of the README's "A commit whose answer was lost is settled").
 */
import type pg from 'pg';
import { expect, it } from 'vitest';
import { createPostgresIdempotency, createPostgresStore } from '../src/index.js';
import { ownPostgresWithBusiness } from './frozen-postgres.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const LIMIT = 300;
const LEASE_MS = 1_500;

const own = ownPostgresWithBusiness(LIMIT);

type Query = (...args: unknown[]) => unknown;

it.each([[500], [2 * LEASE_MS]])(
  'frozen %i ms as COMMIT is sent: one business row, and every answer is its run',
  async (frozenMs) => {
    const { pool, server } = own;
    const store = createPostgresStore({ pool, statementTimeoutMs: LIMIT });
    const idem = createPostgresIdempotency<string>({
      store,
      leaseMs: LEASE_MS,
      heartbeatMs: LEASE_MS / 3,
      storeTimeoutMs: 2 * LIMIT,
    });
    const key = `commit-${frozenMs}`;
    let runs = 0;
    const op = async ({ tx }: { tx: pg.PoolClient }) => {
      const run = ++runs;
      await tx.query('INSERT INTO business (k, run) VALUES ($1, $2)', [key, run]);
      if (run === 1) {
        // The engine sends COMMIT on this very client: freeze the server as it goes.
        const client = tx as unknown as { query: Query };
        const query = client.query;
        client.query = function (this: unknown, ...args: unknown[]) {
          const config = args[0] as { text?: string } | string;
          if ((typeof config === 'string' ? config : config?.text) === 'COMMIT') {
            client.query = query;
            server.freeze();
            setTimeout(() => server.thaw(), frozenMs);
          }
          return query.apply(this, args);
        };
      }
      return `v${run}`;
    };
    const first = await idem.execute({ key, scope: 's' }, op as never).catch((e: unknown) => e);
    // Retried until a value (bounded), then once more after the server surely answers again.
    let last: unknown;
    const started = performance.now();
    while (performance.now() - started < 15_000) {
      last = await idem.execute({ key, scope: 's' }, op as never).catch((e: unknown) => e);
      if (!(last instanceof Error)) break;
      await sleep(200);
    }
    await sleep(Math.max(0, frozenMs + 500 - (performance.now() - started)));
    const again = await idem.execute({ key, scope: 's' }, op as never);
    const { rows } = await pool.query<{ run: number }>('SELECT run FROM business WHERE k = $1', [
      key,
    ]);
    console.log(
      `[outage31 pg commit] frozen ${frozenMs} ms: first ${first instanceof Error ? (first as Error & { code?: string }).code : JSON.stringify(first)}, runs ${runs}, rows ${JSON.stringify(rows)}`,
    );
    expect(rows).toHaveLength(1);
    const committed = `v${rows[0]?.run}`;
    expect(last).toMatchObject({ value: committed });
    expect(again).toEqual({ value: committed, replayed: true });
    if (!(first instanceof Error)) expect(first).toMatchObject({ value: committed });
    else expect((first as Error & { code?: string }).code).toBe('STORE_UNAVAILABLE');
  },
  60_000,
);
