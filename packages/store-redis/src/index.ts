export type { RecommendedRedisOptionsInput } from './client-options.js';
export { recommendedRedisClusterOptions, recommendedRedisOptions } from './client-options.js';
export type { RedisDurability } from './durability.js';
export { describeRedisDurability } from './durability.js';
export type { RedisLiveStreamOptions } from './redis-live-streams.js';
export { createRedisLiveStreams } from './redis-live-streams.js';
export type { RedisStore, RedisStoreOptions } from './redis-store.js';
export { createRedisStore } from './redis-store.js';
export type { WaitForReplicas } from './replica-wait.js';
