import { randomBytes } from 'node:crypto';
import { DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import { createDynamoDbStore } from '@idem/store-dynamodb';
import { REDIS_HELP, REDIS_URL } from '@idem/test-ledger';
import { Redis } from 'ioredis';
import type { TestProject } from 'vitest/node';
// The same module `node scripts/dynamodb-local.mjs fetch|start` runs.
import { startDynamoDbLocal } from '../../../scripts/dynamodb-local.mjs';
import { localClient } from './dynamodb-client.js';

declare module 'vitest' {
  export interface ProvidedContext {
    dynamodbEndpoint: string;
    dynamodbTable: string;
  }
}

/**
 * Fails (never skips) when Redis does not answer, starts DynamoDB Local on a free port (or
 * uses DYNAMODB_ENDPOINT) and creates a table unique to this run.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    await redis.ping();
  } catch (error) {
    throw new Error(`${REDIS_HELP} (${(error as Error).message})`);
  } finally {
    redis.disconnect();
  }
  const local = await startDynamoDbLocal();
  const table = `idem-lambda-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const client = localClient(local.endpoint);
  try {
    await createDynamoDbStore({ client, tableName: table }).ensureTable({ pollMs: 50 });
  } catch (error) {
    client.destroy();
    await local.stop();
    throw error;
  }
  project.provide('dynamodbEndpoint', local.endpoint);
  project.provide('dynamodbTable', table);
  return async () => {
    try {
      // A shared DynamoDB outlives the run: leave no table behind.
      if (!local.started) await client.send(new DeleteTableCommand({ TableName: table }));
    } finally {
      client.destroy();
      await local.stop();
    }
  };
}
