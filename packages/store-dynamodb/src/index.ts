export type {
  BoundedDynamoDbClientConfig,
  RecommendedDynamoDbClientInput,
} from './client-config.js';
export { recommendedDynamoDbClientConfig } from './client-config.js';
export { createDynamoDbStore } from './dynamodb-store.js';
export type { DynamoDbStore, DynamoDbStoreOptions } from './options.js';
export type { RecordAttributeNames } from './record-item.js';
export { defaultAttributeNames } from './record-item.js';
export type { EnsureTableOptions, EnsureTableResult } from './table.js';
