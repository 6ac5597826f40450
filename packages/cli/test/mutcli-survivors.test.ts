// Mutation audit of @idem/cli (mutcli): each test here fails with a mutant of src that the
// rest of the suite let live, and passes on the source. In process (`runCli`), against the
// shared Redis and PostgreSQL; records written by the stores' own libraries.
import { randomBytes } from 'node:crypto';
import { createIdempotency, deriveStorageKey } from '@idem/core';
import { createPostgresStore, recommendedPoolConfig } from '@idem/store-postgres';
import { createRedisStore } from '@idem/store-redis';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { DATABASE_URL, REDIS_URL, redisUnderPrefix, runInProcess } from './in-process.js';

const STORE = 'redis://127.0.0.1:1';
const SCOPE = '["tenant-1","POST /charges"]';

/** Runs a command line that must be refused as usage (exit 2) with `message` in its output. */
async function refused(message: string, ...argv: string[]): Promise<void> {
  const run = await runInProcess(...argv);
  expect([argv, run.code]).toEqual([argv, 2]);
  expect(run.lines.join('\n')).toContain(message);
}

describe('mutcli: command lines refused before anything is sent', () => {
  it('--operation with --scope', () =>
    refused(
      '--operation goes with --principal or --global',
      'inspect',
      'k',
      '--store',
      STORE,
      '--scope',
      SCOPE,
      '--operation',
      'POST /x',
    ));

  it('two keys', () =>
    refused('Give exactly one key', 'inspect', 'k1', 'k2', '--store', STORE, '--scope', SCOPE));

  it('a storage key in upper case, or with a scope', async () => {
    const hex = deriveStorageKey(['t'], 'k');
    await refused(
      'A storage key is 64 lowercase hex characters',
      'inspect',
      hex.toUpperCase(),
      '--storage-key',
      '--store',
      STORE,
    );
    await refused(
      '--storage-key takes no scope',
      'inspect',
      hex,
      '--storage-key',
      '--store',
      STORE,
      '--scope',
      SCOPE,
    );
  });

  it('an empty --owner, and a --fence that is not a whole number as digits', async () => {
    await refused(
      '--owner must not be empty',
      'release',
      'k',
      '--owner=',
      '--store',
      STORE,
      '--scope',
      SCOPE,
    );
    for (const fence of ['1e3', '-1', '0x10', '2.0', ' 7'])
      await refused(
        '--fence must be a whole number',
        'release',
        'k',
        `--fence=${fence}`,
        '--store',
        STORE,
        '--scope',
        SCOPE,
      );
  });

  it('a DynamoDB region that is not a region name (a hostname component)', async () => {
    for (const region of ['eu-west-1.evil.example', 'a/b', 'x'.repeat(65)]) {
      const run = await runInProcess(
        'inspect',
        'k',
        '--store',
        `dynamodb://idem?region=${encodeURIComponent(region)}&endpoint=http://127.0.0.1:1`,
        '--scope',
        SCOPE,
        '--json',
      );
      expect(run.code).toBe(2);
      const out = JSON.parse(run.lines[0] ?? '{}') as { error?: { code: string; message: string } };
      expect(out.error?.code).toBe('bad_store_url');
      expect(out.error?.message).toContain('region is not a region name');
    }
  });
});

describe('mutcli: what inspect shows', () => {
  const redis = redisUnderPrefix('mutcli');

  it("doubles a backslash of the store's owner in text output (so \\u001b as text differs from ESC shown)", async () => {
    const store = createRedisStore({ client: redis.client(), keyPrefix: redis.prefix });
    const key = `k-${randomBytes(4).toString('hex')}`;
    const scope = ['tenant-1', 'POST /charges'];
    const storageKey = deriveStorageKey(scope, key);
    const owner = 'own\\u001b\u001b';
    const acquired = await store.acquire({
      key: storageKey,
      owner,
      fingerprint: 'fp',
      leaseMs: 60_000,
      retentionMs: 60_000,
    });
    expect(acquired.kind).toBe('acquired');
    const run = await runInProcess(
      'inspect',
      key,
      '--store',
      REDIS_URL,
      '--prefix',
      redis.prefix,
      '--scope',
      JSON.stringify(scope),
    );
    expect(run.code).toBe(0);
    expect(run.lines).toContain('owner        own\\\\u001b\\u001b');
  });
});

describe('mutcli: the default PostgreSQL table', () => {
  const schema = `mutcli_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Pool({ connectionString: DATABASE_URL, max: 1 });
  admin.on('error', () => {});
  afterAll(async () => {
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => undefined);
    await admin.end();
  });

  it('is idem_records (the store default): a record there is found without --table', async () => {
    await admin.query(`CREATE SCHEMA ${schema}`);
    // The schema first on the search path, for the library's pool and the CLI's URL alike.
    const url = new URL(DATABASE_URL);
    url.searchParams.set('options', `-c search_path=${schema}`);
    const pool = new pg.Pool({
      connectionString: url.href,
      ...recommendedPoolConfig(),
      max: 1,
    });
    pool.on('error', () => {});
    try {
      const store = createPostgresStore({ pool, table: 'idem_records' });
      await store.ensureSchema();
      const idem = createIdempotency({ store, heartbeatMs: false });
      const scope = ['tenant-1', 'POST /charges'];
      await idem.execute({ key: 'pg-k', scope, fingerprint: 'f' }, async () => ({ ok: 1 }));
      const { rows } = await admin.query(`SELECT count(*)::int AS n FROM ${schema}.idem_records`);
      expect(rows[0]?.n).toBe(1);
      const run = await runInProcess(
        'inspect',
        'pg-k',
        '--store',
        url.href,
        '--scope',
        JSON.stringify(scope),
        '--json',
      );
      expect(run.code).toBe(0);
      expect(JSON.parse(run.lines[0] ?? '{}')).toMatchObject({ found: true, status: 'completed' });
    } finally {
      await pool.end();
    }
  });
});
