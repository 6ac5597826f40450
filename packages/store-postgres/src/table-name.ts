import { InvalidInputError, quotedInput } from '@idem/core';

/** A table name, split and quoted for SQL. */
export interface TableName {
  /** As the user wrote it: `idem_records` or `app.idem_records`. */
  readonly text: string;
  /** The schema, when the name has one. */
  readonly schema: string | undefined;
  /** The table's own name (no schema). */
  readonly table: string;
  /** Quoted, schema-qualified when given: `"app"."idem_records"`. */
  readonly sql: string;
  /** A quoted name in the same schema as the table: `"app"."idem_records_acquire"`. */
  sibling(suffix: string): string;
}

// Lower-case unquoted identifiers only: what `CREATE TABLE idem_records` makes, so the name in
// psql, in the migration file and in the store is one and the same. 63 bytes is PostgreSQL's
// identifier limit; the longest sibling adds 12 characters (`_held_leases`; `_expires_at`, `_complete`).
const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;
const MAX_TABLE_LENGTH = 50;

/**
 * Parses `table` or `schema.table`. Each part MUST be a lower-case identifier
 * (`[a-z_][a-z0-9_]*`); the table part at most 50 characters, so that the function and index
 * names derived from it fit PostgreSQL's 63-byte identifiers. Anything else is refused with
 * `InvalidInputError` (the name is spliced into SQL text, so nothing else is ever accepted).
 */
export function parseTableName(text: unknown): TableName {
  if (typeof text !== 'string')
    throw new InvalidInputError('table must be a string such as "idem_records"');
  const parts = text.split('.');
  const valid =
    parts.length <= 2 &&
    parts.every((part) => IDENTIFIER.test(part) && part.length <= 63) &&
    parts[parts.length - 1]!.length <= MAX_TABLE_LENGTH;
  if (!valid) {
    throw new InvalidInputError(
      `table must be "name" or "schema.name" of lower-case identifiers ([a-z_][a-z0-9_]*, the name at most ${MAX_TABLE_LENGTH} characters); got ${quotedInput(text, 80)}`,
    );
  }
  const schema = parts.length === 2 ? parts[0] : undefined;
  const table = parts[parts.length - 1]!;
  const qualify = (name: string) => (schema ? `"${schema}"."${name}"` : `"${name}"`);
  return {
    text,
    schema,
    table,
    sql: qualify(table),
    sibling: (suffix) => qualify(`${table}${suffix}`),
  };
}
