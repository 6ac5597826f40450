import { randomBytes } from 'node:crypto';
import { DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import type { TestProject } from 'vitest/node';
// The same module `node scripts/dynamodb-local.mjs fetch|start` runs.
import { startDynamoDbLocal } from '../../../scripts/dynamodb-local.mjs';
import { createDynamoDbStore } from '../src/index.js';
import { layouts, makeClient, type TableNames } from './dynamodb-env.js';

declare module 'vitest' {
  export interface ProvidedContext {
    dynamodbEndpoint: string;
    dynamodbTables: TableNames;
  }
}

/**
 * Starts DynamoDB Local on a free port (or uses DYNAMODB_ENDPOINT) and creates a table per
 * layout with a name unique to this run. Fails, never skips, when neither is possible.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const local = await startDynamoDbLocal();
  const run = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const tables: TableNames = {
    simple: `idem-test-${run}-simple`,
    single: `idem-test-${run}-single`,
  };
  const client = makeClient(local.endpoint);
  try {
    for (const layout of layouts) {
      await createDynamoDbStore({
        client,
        tableName: tables[layout.id],
        ...layout.options,
      }).ensureTable({
        pollMs: 50,
      });
    }
  } catch (error) {
    client.destroy();
    await local.stop();
    throw error;
  }
  project.provide('dynamodbEndpoint', local.endpoint);
  project.provide('dynamodbTables', tables);
  return async () => {
    try {
      if (!local.started) {
        // A shared DynamoDB outlives the run: leave no tables behind.
        for (const name of Object.values(tables))
          await client.send(new DeleteTableCommand({ TableName: name }));
      }
    } finally {
      client.destroy();
      await local.stop();
    }
  };
}
