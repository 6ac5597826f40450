/**
 * rev19: `forceRelease` compares the expected owner as its UTF-8 bytes. An owner the store
 * holds (non-ASCII included) must still match and be released; one it cannot hold (U+0000, a
 * character the database's encoding lacks, a very long one) is another execution, answered
 * `changed`; a malformed one (lone surrogate) is refused before anything is sent. Also in
 * databases whose encoding is not UTF-8 (LATIN1, SQL_ASCII).
 */
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createPostgresStore } from '../src/index.js';
import { acquireInput, DATABASE_URL, makePool, newKey, randomName } from './pg-env.js';

const pool = makePool({ max: 2 });
const table = inject('pgTable');
const store = createPostgresStore({ pool, table });
const extra: { pool: pg.Pool; drop: string }[] = [];
// DROP DATABASE waits for a checkpoint: under CI's load it ran past the pool's query
// timeout once, and later past the server's statement_timeout the pool sets (2 s; DROP
// DATABASE cannot run in a transaction, so no SET LOCAL): a connection of its own, with a
// minute for each, dropped after. Clean-up, not a bound.
afterAll(async () => {
  for (const { pool: p } of extra) await p.end();
  const client = await pool.connect();
  try {
    await client.query("SET statement_timeout = '60s'");
    for (const { drop } of extra)
      await client.query({
        text: `DROP DATABASE IF EXISTS ${drop} WITH (FORCE)`,
        query_timeout: 60_000,
      } as pg.QueryConfig);
  } finally {
    client.release(true);
  }
  await pool.end();
}, 180_000);

const HELD = ['é-owner', 'owner-😀', '所有者', 'A\u030A', '\u00C5', `${'x'.repeat(253)}ü😀`];

async function heldBy(s: typeof store, owner: string) {
  const key = newKey();
  const acquired = await s.acquire(acquireInput(key, { owner }));
  expect(acquired.kind).toBe('acquired');
  return { key, fence: (acquired as { fence: number }).fence };
}

async function checks(s: typeof store, held: readonly string[]) {
  for (const owner of held) {
    // The owner it holds, alone or with its fence: released.
    const { key, fence } = await heldBy(s, owner);
    const inspected = await s.admin.inspect(key);
    expect(inspected?.owner).toBe(owner);
    expect(await s.admin.forceRelease(key, { owner, fence })).toEqual({
      ok: true,
      fence: fence + 1,
      previousOwner: owner,
    });
    // Another owner (NUL appended, NFC vs NFD, an emoji, 1 MB): changed, with the held one.
    const other = await heldBy(s, owner);
    for (const expected of [
      `${owner}\0`,
      owner === 'A\u030A' ? '\u00C5' : `${owner}\u00E9`,
      `${owner}\u{1F600}`,
      owner.padEnd(1_000_000, 'y'),
    ]) {
      expect(await s.admin.forceRelease(other.key, { owner: expected })).toEqual({
        ok: false,
        reason: 'changed',
        owner,
        fence: other.fence,
      });
    }
    // Malformed: refused before anything is sent.
    await expect(s.admin.forceRelease(other.key, { owner: `${owner}\uD800` })).rejects.toThrow(
      /well-formed/,
    );
    expect((await s.admin.inspect(other.key))?.status).toBe('in_progress');
  }
}

describe('rev19 forceRelease expected owner as UTF-8 bytes', () => {
  it('UTF-8 database: held non-ASCII owners match; others answer changed', async () => {
    await checks(store, HELD);
  });

  it('a row an older layout wrote (no origin) with a non-ASCII owner is still released', async () => {
    const key = newKey();
    const now = Date.now();
    await pool.query(
      `INSERT INTO ${table} (key, status, fingerprint, owner, fence, lease_until, expires_at)
       VALUES ($1, 'in_progress', 'fp', $2, 7, $3, $4)`,
      [key, 'älter', now + 60_000, now + 120_000],
    );
    expect(await store.admin.forceRelease(key, { owner: 'älter' })).toEqual({
      ok: true,
      fence: 8,
      previousOwner: 'älter',
    });
  });

  for (const encoding of ['LATIN1', 'SQL_ASCII']) {
    it(`${encoding} database: held owners match; an owner it cannot hold answers changed`, async () => {
      const db = randomName('rev19');
      // Set-up, a minute at most: CREATE DATABASE waits for a checkpoint too.
      await pool.query({
        text: `CREATE DATABASE ${db} ENCODING '${encoding}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0`,
        query_timeout: 60_000,
      } as pg.QueryConfig);
      const url = new URL(DATABASE_URL);
      url.pathname = `/${db}`;
      const p = new pg.Pool({ connectionString: url.toString(), max: 2 });
      p.on('error', () => {});
      extra.push({ pool: p, drop: db });
      const s = createPostgresStore({ pool: p, table: 'idem_records' });
      await s.ensureSchema();
      await checks(s, encoding === 'LATIN1' ? ['é-owner', '\u00C5', 'plain'] : HELD);
    }, 120_000);
  }
});
