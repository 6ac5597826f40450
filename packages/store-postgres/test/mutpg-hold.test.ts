/**
 * Mutation audit (store-postgres): the statement that makes a business transaction hold its
 * record (`holdRecordSql`, sent right after `BEGIN`) takes the row only while it is still in
 * progress under the execution's owner and fence. The engine's tests lock right after the
 * acquisition, when the record is always so: a statement that also took a record its
 * execution had already released, or the same owner's record at another fence (it acquired
 * the key again after its record expired), passed. Here the statement is sent as the engine
 * sends it, on a server clock the test sets (see mutpg-helpers.ts).
 */
import { describe, expect, it } from 'vitest';
import { holdRecordSql } from '../src/hold-record-sql.js';
import { parseTableName } from '../src/table-name.js';
import { acquiring, frozenClockSession, T0 } from './mutpg-helpers.js';

const clock = frozenClockSession();

/** Whether the lock statement for (key, owner, fence) takes the row (then rolled back). */
async function holds(key: string, owner: string, fence: number): Promise<boolean> {
  const client = await clock.pool.connect();
  try {
    const hold = holdRecordSql(
      parseTableName(clock.shared.table),
      { key: clock.shared.rowKey(key), owner, fence },
      (value) => client.escapeLiteral(value),
      false,
    );
    await client.query('BEGIN');
    const { rows } = await client.query(hold.lock());
    return rows[0]?.fence != null;
  } finally {
    await client.query('ROLLBACK');
    client.release();
  }
}

describe('mutpg: the business transaction holds only its own live acquisition', () => {
  it('not a record its execution released', async () => {
    await clock.set(T0);
    const input = acquiring('released');
    await clock.shared.acquire(input);
    expect(await holds('released', input.owner, 1)).toBe(true);
    await clock.shared.release({ key: 'released', owner: input.owner, retentionMs: 10_000 });
    expect(await holds('released', input.owner, 1)).toBe(false);
  });

  it("not the same owner's later acquisition (another fence)", async () => {
    await clock.set(T0);
    const input = acquiring('again', { leaseMs: 1_000, retentionMs: 1_000 });
    await clock.shared.acquire(input);
    await clock.set(T0 + 2_000);
    expect(await holds('again', input.owner, 1)).toBe(false);
    expect(await clock.shared.acquire(input)).toMatchObject({ kind: 'acquired', fence: 2 });
    expect(await holds('again', input.owner, 1)).toBe(false);
    expect(await holds('again', input.owner, 2)).toBe(true);
  });
});
