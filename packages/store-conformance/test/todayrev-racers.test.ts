// todayrev: adversarial review of `racers()` with `sharedBackend` left unset (found out per
// racing check from whether this store sees a record another instance made alike acquired).
import type { IdempotencyStore } from '@idem/core';
import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../../store-memory/src/index.js';
import type { ConformanceOptions } from '../src/index.js';
import { sharedBackendOptions } from './confmut-shared.js';
import { failingChecks } from './confrev-variants.js';

const T = 120_000;

/**
 * The instance-lock store (acquire a read then a write, atomic within one instance only) whose
 * reads of a record another instance wrote lag behind by `lagMs` (a read replica, an
 * eventually consistent GetItem).
 */
function laggingInstanceLock(lagMs: number): ConformanceOptions {
  const base = sharedBackendOptions('instance-lock', 'injectable', { sharedBackend: undefined });
  const writes = new Map<string, { by: object; at: number }>();
  return {
    ...base,
    async createStore(ctx) {
      const inner = await base.createStore(ctx);
      const me = {};
      const name = (key: string) => `${ctx.prefix}${key}`;
      return {
        ...inner,
        acquire: async (input) => {
          const result = await inner.acquire(input);
          if (result.kind === 'acquired')
            writes.set(name(input.key), { by: me, at: performance.now() });
          return result;
        },
        get: async (key) => {
          const w = writes.get(name(key));
          if (w && w.by !== me && performance.now() - w.at < lagMs) return undefined;
          return inner.get(key);
        },
      } satisfies IdempotencyStore;
    },
  };
}

/** The memory store bounded to 16 records, one instance per prefix: instances made alike share. */
function boundedSharedByPrefix(sharedBackend: boolean | undefined): ConformanceOptions {
  const byPrefix = new Map<string, IdempotencyStore>();
  return {
    clock: 'injectable',
    capacity: 16,
    ...(sharedBackend !== undefined ? { sharedBackend } : {}),
    createStore: ({ clock, prefix }) => {
      let store = byPrefix.get(prefix);
      if (!store) {
        store = createMemoryStore({ clock, sweepIntervalMs: 0, maxEntries: 16 });
        byPrefix.set(prefix, store);
      }
      return store;
    },
  };
}

describe('todayrev: racers() and a bounded store whose instances share the records', () => {
  // FINDING LOW (fixed: the takeover race check keeps its live records and racers' probe within
  // the declared capacity): with `sharedBackend` unset (or true) the record racers acquires on
  // another instance counts against a shared bounded store's capacity, and the takeover check's
  // 16 live records then overflowed it (StoreFullError): a correct store failed. Unset, it passed
  // before 71bbcd99 (raced on one instance).
  for (const shared of [undefined, true, false])
    it(
      `passes every check with sharedBackend ${String(shared)}`,
      async () => {
        expect(await failingChecks(boundedSharedByPrefix(shared))).toEqual([]);
      },
      T,
    );
});

describe('todayrev: racers() with sharedBackend left unset and a lagging cross-instance read', () => {
  // FINDING LOW (open, inherent to finding out): an instance-local lock around acquire (two
  // processes can both acquire a free key) passes every check when another instance's record is
  // not yet visible to this one's get (read replica, eventually consistent read): the suite takes
  // the instances for ones living apart and races on one. Only `sharedBackend: true` catches it;
  // the README/option docs say to set it for a shared service.
  it.fails(
    'an acquire atomic only within one instance is caught, option unset',
    async () => {
      expect(await failingChecks(laggingInstanceLock(1_000))).toContain(
        'acquire: of 16 concurrent acquires of a free key exactly one wins (across instances with sharedBackend)',
      );
    },
    T,
  );
  it(
    'the same store is caught with sharedBackend: true',
    async () => {
      expect(
        await failingChecks({ ...laggingInstanceLock(1_000), sharedBackend: true }),
      ).not.toEqual([]);
    },
    T,
  );
});
