import {
  createMemoryLiveStreams,
  type IdempotencyStore,
  InvalidInputError,
  type LiveGeneration,
  type LiveStreams,
  MAX_TIMER_MS,
  type OutcomeOpenSettings,
  shownInput,
} from '@idem/core';
import type { AttachSettings } from './attach.js';
import type { LiveSettings } from './live-publish.js';

/** Options of live streams: duplicates attach to a streamed response in flight. */
export interface LiveStreamOptions {
  /**
   * Where chunks are published. The in-process channel reaches duplicates that arrive at the
   * same process; `createRedisLiveStreams` (`@idem/store-redis`) reaches every process that
   * shares the Redis. @default one in-process channel per store object
   */
  channel?: LiveStreams;
  /** Media types of final responses that are published (others keep the 409). @default ['text/event-stream', 'application/x-ndjson'] */
  mediaTypes?: readonly string[];
  /** Most readers attached to one stream in this process; more get the 409. @default 32 */
  maxReaders?: number;
  /** An attached reader whose client has not taken a chunk for this long is cut (ms). @default 15_000 */
  stallMs?: number;
  /** Longest single wait of a reader on the channel (ms; a Redis `XREAD BLOCK`). @default 1_000 */
  blockMs?: number;
  /** How long a resume waits for the event its `Last-Event-ID` names to be published (ms). @default 2_000 */
  anchorWaitMs?: number;
}

const defaultChannels = new WeakMap<IdempotencyStore, LiveStreams>();
const storeTokens = new WeakMap<IdempotencyStore, string>();

/**
 * `channel` seen through `store`: generations under a token of the store object. The token is
 * drawn at the first publish or read, not when the handler is made: workerd refuses random
 * values at global scope, where a handler is usually made.
 */
function perStore(channel: LiveStreams, store: IdempotencyStore): LiveStreams {
  const scoped = <T extends LiveGeneration>(generation: T): T => {
    let token = storeTokens.get(store);
    if (token === undefined) {
      token = globalThis.crypto.randomUUID();
      storeTokens.set(store, token);
    }
    return { ...generation, storageKey: `${token}:${generation.storageKey}` };
  };
  return {
    reach: channel.reach,
    publish: (input) => channel.publish(scoped(input)),
    open: (generation) => channel.open(scoped(generation)),
    stats: () => channel.stats(),
  };
}

function positive(
  name: string,
  value: number | undefined,
  fallback: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  const resolved = value ?? fallback;
  if (!(Number.isSafeInteger(resolved) && resolved > 0 && resolved <= max))
    throw new InvalidInputError(
      `liveStreams.${name} must be a positive integer${max < Number.MAX_SAFE_INTEGER ? ` of ms, at most ${max} (the longest timer Node keeps, about 24.8 days)` : ''}; got ${shownInput(resolved)}`,
    );
  return resolved;
}

/** Resolves `liveStreams`; undefined when it is off. @internal */
export function resolveLiveStreams(
  option: false | LiveStreamOptions | undefined,
  store: IdempotencyStore,
  outcomes: OutcomeOpenSettings,
): { publish: LiveSettings; attach: AttachSettings } | undefined {
  if (option === false) return undefined;
  if (option !== undefined && (typeof option !== 'object' || option === null))
    throw new InvalidInputError('liveStreams must be false or an options object');
  const options = option ?? {};
  let channel = options.channel;
  if (!channel) {
    channel = defaultChannels.get(store) ?? createMemoryLiveStreams();
    defaultChannels.set(store, channel);
  }
  // An in-process channel may be given to handlers over several stores (same storage key and
  // fence in two of them): each store reads and writes its own generations only.
  if (channel.reach === 'process') channel = perStore(channel, store);
  const mediaTypes = options.mediaTypes ?? ['text/event-stream', 'application/x-ndjson'];
  if (!(Array.isArray(mediaTypes) && mediaTypes.every((t) => typeof t === 'string')))
    throw new InvalidInputError('liveStreams.mediaTypes must be a list of media types');
  return {
    publish: { channel, types: new Set(mediaTypes.map((t) => t.trim().toLowerCase())) },
    attach: {
      channel,
      store,
      storeTimeoutMs: outcomes.storeTimeoutMs,
      outcomes,
      maxReaders: positive('maxReaders', options.maxReaders, 32),
      stallMs: positive('stallMs', options.stallMs, 15_000, MAX_TIMER_MS),
      blockMs: positive('blockMs', options.blockMs, 1_000, MAX_TIMER_MS),
      anchorWaitMs: positive('anchorWaitMs', options.anchorWaitMs, 2_000, MAX_TIMER_MS),
    },
  };
}
