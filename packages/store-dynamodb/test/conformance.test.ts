import { describeStoreConformance } from '@idem/store-conformance';
import { afterAll, inject } from 'vitest';
import { createDynamoDbStore } from '../src/index.js';
import { layouts, makeClient, rawRead, rememberStore } from './dynamodb-env.js';

// One connection: the suite's ObservedStore judges invariants (a) and (c) in the order the
// answers arrive, which over several connections can differ from the order DynamoDB applied
// the writes (see the README's Testing section). Concurrency on many connections is
// checked in requests.test.ts.
const client = makeClient(inject('dynamodbEndpoint'), { serial: true });
const tables = inject('dynamodbTables');
afterAll(() => client.destroy());

for (const layout of layouts) {
  const tableName = tables[layout.id];
  describeStoreConformance(`dynamodb, ${layout.name}`, {
    // DynamoDB has no server clock a condition can use: the store decides by ctx.clock.
    clock: 'injectable',
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
    numRuns: process.env.CI ? 100 : 20,
  });
}
