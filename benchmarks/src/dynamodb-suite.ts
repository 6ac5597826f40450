import { randomBytes } from 'node:crypto';
import { DynamoDBPersistenceLayer } from '@aws-lambda-powertools/idempotency/dynamodb';
import {
  CreateTableCommand,
  DeleteTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { createDynamoDbStore, recommendedDynamoDbClientConfig } from '@idem/store-dynamodb';
// The same module `node scripts/dynamodb-local.mjs start` runs, as the store's tests use it.
import { startDynamoDbLocal } from '../../scripts/dynamodb-local.mjs';
import { idemContender, powertoolsContender } from './contenders.js';
import { type Contender, runEngineSuite } from './engine-suite.js';
import { forEachConcurrently, PREPARE_CONCURRENCY } from './measure.js';
import { RESULT_BYTES, resultFor } from './payload.js';
import type { Profile } from './profile.js';
import type { SuiteResult } from './result.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** A client of its own for each contender, all alike: bounded, with room for a loaded emulator. */
function makeClient(endpoint: string): DynamoDBClient {
  return new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'idembench', secretAccessKey: 'idembench' },
    ...recommendedDynamoDbClientConfig({ requestTimeoutMs: 10_000, maxAttempts: 3 }),
  });
}

async function createTable(client: DynamoDBClient, tableName: string, key: string): Promise<void> {
  await client.send(
    new CreateTableCommand({
      TableName: tableName,
      AttributeDefinitions: [{ AttributeName: key, AttributeType: 'S' }],
      KeySchema: [{ AttributeName: key, KeyType: 'HASH' }],
      BillingMode: 'PAY_PER_REQUEST',
    }),
  );
}

/** The raw ceiling: PutItem (in progress) + UpdateItem (result) a cycle, one GetItem a replay. */
function rawDynamoDbContender(client: DynamoDBClient, tableName: string): Contender {
  const cycle = async (key: string) => {
    await client.send(
      new PutItemCommand({
        TableName: tableName,
        Item: {
          pk: { S: key },
          status: { S: 'in_progress' },
          leaseUntil: { N: String(Date.now() + 30_000) },
        },
      }),
    );
    await client.send(
      new UpdateItemCommand({
        TableName: tableName,
        Key: { pk: { S: key } },
        UpdateExpression: 'SET #s = :c, #r = :r',
        ExpressionAttributeNames: { '#s': 'status', '#r': 'result' },
        ExpressionAttributeValues: {
          ':c': { S: 'completed' },
          ':r': { S: JSON.stringify(resultFor(key)) },
        },
      }),
    );
  };
  return {
    name: 'raw SDK',
    role: 'raw',
    async prepare(keys) {
      await forEachConcurrently(keys, PREPARE_CONCURRENCY, cycle);
    },
    cycle,
    async replay(key) {
      const { Item } = await client.send(
        new GetItemCommand({ TableName: tableName, Key: { pk: { S: key } }, ConsistentRead: true }),
      );
      if (Item?.result?.S?.length !== RESULT_BYTES) throw new Error(`raw: ${key} has no result`);
    },
  };
}

export async function runDynamoDbSuite(
  profile: Profile,
  log: (line: string) => void,
): Promise<SuiteResult> {
  // The JVM's optimising compiler stays on here (the tests turn it off): the figures are
  // the emulator's steady state, after the warm-up.
  const local = await startDynamoDbLocal({ jvmFlags: [] });
  const run = `${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  const tables = {
    raw: `idem-bench-${run}-raw`,
    idem: `idem-bench-${run}-idem`,
    powertools: `idem-bench-${run}-powertools`,
  };
  const clients = {
    raw: makeClient(local.endpoint),
    idem: makeClient(local.endpoint),
    powertools: makeClient(local.endpoint),
  };
  const created: string[] = [];
  try {
    const idemStore = createDynamoDbStore({ client: clients.idem, tableName: tables.idem });
    await idemStore.ensureTable({ pollMs: 50 });
    created.push(tables.idem);
    await createTable(clients.raw, tables.raw, 'pk');
    created.push(tables.raw);
    // The table Powertools documents: partition key `id` (string).
    await createTable(clients.powertools, tables.powertools, 'id');
    created.push(tables.powertools);
    const powertoolsLayer = new DynamoDBPersistenceLayer({
      tableName: tables.powertools,
      awsSdkV3Client: clients.powertools,
    });
    return await runEngineSuite(
      {
        id: 'dynamodb',
        title: 'DynamoDB Local: one idempotent operation, ops/s',
        notes: [
          local.started
            ? 'DynamoDB Local (-inMemory) started by the benchmark on this machine: emulator figures, not AWS'
            : `DynamoDB at DYNAMODB_ENDPOINT ${local.endpoint}`,
          `cycle: a first execution on a new key (the operation returns a ${RESULT_BYTES}-byte JSON result); replay: the same call on a completed key`,
          'idem: @idem/store-dynamodb (a conditional PutItem acquire + a conditional whole-item PutItem completion a cycle, one failing conditional PutItem a replay; UpdateItem when the key has an item or the store did not acquire it); Powertools: DynamoDBPersistenceLayer (conditional PutItem + UpdateItem a cycle, one failing conditional PutItem a replay)',
          'raw SDK: PutItem + UpdateItem a cycle, one consistent GetItem a replay, no conditions; each contender has its own client and table',
        ],
        concurrencies: profile.concurrency.dynamodb,
        contenders: [
          rawDynamoDbContender(clients.raw, tables.raw),
          idemContender(() => idemStore),
          powertoolsContender(() => powertoolsLayer, 'bench'),
        ],
        bounds: profile.dynamodb,
        replayPool: profile.dynamodbReplayPool,
      },
      profile,
      log,
    );
  } finally {
    try {
      // A DynamoDB we did not start outlives the run: leave no tables behind.
      if (!local.started) {
        for (const name of created)
          await clients.raw.send(new DeleteTableCommand({ TableName: name }));
      }
    } finally {
      for (const client of Object.values(clients)) client.destroy();
      await local.stop();
    }
  }
}
