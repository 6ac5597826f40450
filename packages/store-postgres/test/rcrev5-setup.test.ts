import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { runStatement } from '../src/pg-call.js';
import { RenewalConnection } from '../src/renewal-connection.js';
import { DATABASE_URL, makePool } from './pg-env.js';

/** rcrev5: the own connection's first statement (read committed) and the pool's hooks. */
const raw = makePool({ max: 1 });
afterAll(() => raw.end());

describe('rcrev5: the own connection set-up', () => {
  // Held: the pool's sessions serializable by its options: the own connection reads read
  // committed; an onConnect hook or a connect listener that sets serializable is kept
  // (documented: theirs is kept), and the SET comes before the hook.
  it('read committed first, a hook or listener level kept', async () => {
    const cases: Array<[string, pg.PoolConfig & { onConnect?: unknown }, string, boolean]> = [
      [
        'options',
        { options: '-c default_transaction_isolation=serializable' },
        'read committed',
        false,
      ],
      ['onConnect', {}, 'serializable', true],
      ['listener', {}, 'serializable', false],
    ];
    for (const [name, extra, expected, hook] of cases) {
      const order: string[] = [];
      const pool = new pg.Pool({
        connectionString: DATABASE_URL,
        max: 1,
        ...extra,
        ...(hook
          ? {
              onConnect: async (c: pg.PoolClient) => {
                order.push(
                  `hook:${(await c.query('SHOW transaction_isolation')).rows[0].transaction_isolation}`,
                );
                await c.query("SET default_transaction_isolation = 'serializable'");
              },
            }
          : {}),
      } as pg.PoolConfig);
      if (name === 'listener')
        pool.on('connect', (c) => {
          void c.query("SET default_transaction_isolation = 'serializable'");
        });
      const rc = new RenewalConnection(pool, 2_000, 2_000);
      const done = rc.use();
      try {
        const { rows } = await runStatement<{ transaction_isolation: string }>(
          rc,
          'show',
          { text: 'SHOW transaction_isolation' },
          2_000,
        );
        expect(rows[0]?.transaction_isolation, name).toBe(expected);
        if (hook) expect(order).toEqual(['hook:read committed']);
      } finally {
        done();
        await pool.end();
      }
    }
  });
});
