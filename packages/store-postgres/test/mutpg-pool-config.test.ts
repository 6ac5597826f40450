/**
 * Mutation audit (store-postgres): `recommendedPoolConfig` gives every setting of the README's
 * table (Pool settings). No test read them: a setting dropped from it (the idle limit that
 * ends a frozen process's transaction, the lock or statement limit, the wait for a connection)
 * passed, since the tests that need them set them themselves.
 */
import { expect, it } from 'vitest';
import { recommendedPoolConfig } from '../src/index.js';

it('mutpg: recommendedPoolConfig is the README table, defaults and given limits', () => {
  expect(recommendedPoolConfig()).toEqual({
    statement_timeout: 2_000,
    lock_timeout: 2_000,
    query_timeout: 2_000,
    connectionTimeoutMillis: 2_000,
    idle_in_transaction_session_timeout: 60_000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  expect(
    recommendedPoolConfig({ statementTimeoutMs: 700, idleInTransactionTimeoutMs: 9_000 }),
  ).toMatchObject({
    statement_timeout: 700,
    lock_timeout: 700,
    query_timeout: 700,
    connectionTimeoutMillis: 700,
    idle_in_transaction_session_timeout: 9_000,
  });
});
