import pg from 'pg';
import { LEDGER_TABLE, STATS_TABLE } from '../ledger/postgres-ledger.js';
import { RECORDS_TABLE } from './postgres-connection.js';

/** Removes what one run wrote under `prefix` (records, bills, counters); for the demo. */
export async function deleteDemoRows(url: string, prefix: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, query_timeout: 10_000 });
  await client.connect();
  try {
    for (const [table, column] of [
      [RECORDS_TABLE, 'key'],
      [LEDGER_TABLE, 'message_id'],
      [STATS_TABLE, 'name'],
    ] as const) {
      await client.query(`DELETE FROM ${table} WHERE starts_with(${column}, $1)`, [prefix]);
    }
  } finally {
    await client.end();
  }
}
