import type { TestProject } from 'vitest/node';
import { createPostgresStore } from '../src/index.js';
import { DATABASE_URL, HOW_TO_PROVIDE, makePool, randomName } from './pg-env.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The schema this run created (and drops afterwards). */
    pgSchema: string;
    /** `<schema>.idem_records`, created with `ensureSchema()`. */
    pgTable: string;
  }
}

/**
 * Checks that PostgreSQL answers, creates a schema for this run with the store's table in
 * it, and drops the schema afterwards. Fails, never skips, without a server.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const pool = makePool({ max: 2 });
  const schema = randomName('idem_test');
  const table = `${schema}.idem_records`;
  try {
    await pool.query('SELECT 1');
  } catch (error) {
    await pool.end();
    throw new Error(
      `@idem/store-postgres tests need PostgreSQL: ${DATABASE_URL} did not answer (${(error as Error).message}). ${HOW_TO_PROVIDE}`,
    );
  }
  await createPostgresStore({ pool, table }).ensureSchema();
  project.provide('pgSchema', schema);
  project.provide('pgTable', table);
  return async () => {
    try {
      await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    } finally {
      await pool.end();
    }
  };
}
