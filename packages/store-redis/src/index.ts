export type { RedisStore, RedisStoreOptions } from './redis-store.js';
export { createRedisStore } from './redis-store.js';
