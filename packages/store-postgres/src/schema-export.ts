import { schemaSql as tableSchemaSql } from './schema-sql.js';
import { parseTableName } from './table-name.js';

/**
 * The SQL that creates the store's table, index and functions for `table` (the same script
 * `ensureSchema()` runs), for a migration tool. `sql/schema.sql` is this for the default
 * table `idem_records`.
 */
export function schemaSql(table = 'idem_records'): string {
  return tableSchemaSql(parseTableName(table));
}
