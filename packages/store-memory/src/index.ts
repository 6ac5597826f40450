export type { MemoryStore, MemoryStoreOptions } from './memory-store.js';
export {
  createMemoryStore,
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_ENTRIES,
  DEFAULT_MAX_OUTCOME_BYTES,
} from './memory-store.js';
