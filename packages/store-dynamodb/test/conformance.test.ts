import { describeStoreConformance } from '@idem/store-conformance';
import { afterAll, inject } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { layouts, makeClient, rawRead, rememberStore } from './dynamodb-env.js';

// A pool of connections, as in production: the suite judges order on each call's
// send/answer window, so writes applied out of answer order are no false alarm.
const client = makeClient(inject('dynamodbEndpoint'));
const tables = inject('dynamodbTables');
afterAll(() => client.destroy());

for (const layout of layouts) {
  const tableName = tables[layout.id];
  describeStoreConformance(`dynamodb, ${layout.name}`, {
    // DynamoDB has no server clock a condition can use: the store decides by ctx.clock.
    clock: 'injectable',
    // Every process of an application shares the table: races run across instances.
    sharedBackend: true,
    createStore: ({ clock, prefix }) => {
      const store = createDynamoDbStore({
        client,
        tableName,
        keyPrefix: prefix,
        clock,
        ...layout.options,
      });
      rememberStore(store, { client, tableName, layout, prefix, clock });
      return store;
    },
    rawRead,
    // In CI 120 runs a layout (two layouts; 300 took 90-100 s each of CI's time budget);
    // IDEM_PROPERTY_RUNS overrides.
    numRuns: process.env.CI ? 120 : 20,
  });
}
