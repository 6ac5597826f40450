export type { AppOptions, LlmApp } from './app.js';
export { createApp } from './app.js';
export type { Backend, BackendOptions } from './backend.js';
export { BackendError, openBackend } from './backend.js';
export type { Config, ModelConfig, StoreConfig } from './config.js';
export { ConfigError, describeConfig, parseConfig } from './config.js';
export { boundLedger } from './ledger/bounded-ledger.js';
export type {
  BillResult,
  Ledger,
  LedgerEntry,
  MemoryLedgerOptions,
  StatName,
} from './ledger/ledger.js';
export { createMemoryLedger, StaleFenceError } from './ledger/ledger.js';
export { createRedisLedger } from './ledger/redis-ledger.js';
export type { Directives, LocalModelOptions } from './model/local-model.js';
export { createLocalModel, localReply, localUsage, parseDirectives } from './model/local-model.js';
export type { ChatMessage, ChatModel, ModelInput, Usage } from './model/model.js';
export { collect, ModelError } from './model/model.js';
export { countTokens } from './model/tokens.js';
export { createUpstreamModel, sseData } from './model/upstream-model.js';
export type { RunningServer } from './server.js';
export { modelFor, startServer } from './server.js';
export { callWithin } from './stores/bounded-call.js';
export { connectRedis, reconnectDelay, redisClientOptions } from './stores/redis-connection.js';
export type { RedisDurability } from './stores/redis-durability.js';
export { durabilityWarning, redisDurability } from './stores/redis-durability.js';
