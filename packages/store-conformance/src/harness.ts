import { randomBytes } from 'node:crypto';
import {
  type Clock,
  type IdempotencyStore,
  ManualClock,
  type StoreClock,
  type StoredRecord,
  systemClock,
} from '@idem/core';
import type { ConformanceOptions } from './options.js';

/** Time as a test sees it: a store clock reading and a way to let time pass. */
export interface TestTime {
  /** The clock the store is tested with (the suite's `clock` option). */
  kind: StoreClock;
  /** The clock handed to the store (manual for injectable stores, the system clock otherwise). */
  clock: Clock;
  /** Lease length tests use, in ms. */
  leaseMs: number;
  /** Lets `ms` milliseconds pass: moves the manual clock, or really sleeps. */
  advance(ms: number): Promise<void>;
  /** Slack for comparing deadlines read back from a store with a clock of its own. */
  toleranceMs: number;
}

/** One fresh store plus what a check needs around it. */
export interface Harness {
  store: IdempotencyStore;
  time: TestTime;
  /** A fresh storage key (64 hex characters, like core derives). */
  newKey(): string;
  /** The record through the second channel if the adapter gave one, else through `get`. */
  raw(key: string): Promise<StoredRecord | undefined>;
  /** The suite's `capacity` option: how many records a bounded store made for it holds. */
  capacity?: number;
  /**
   * The suite's `sharedBackend` option: `true`, another instance made alike shares the
   * records; `false`, it does not; `undefined` (left unset), found out by the checks that race
   * (see `racers`).
   */
  sharedBackend: boolean | undefined;
  /**
   * Another store made by `createStore` with this harness's clock, disposed with the harness:
   * `'same'`, with this store's prefix (another instance: with `sharedBackend`, onto the same
   * records); `'fresh'`, with a prefix of its own (it must never meet this store's records).
   */
  another(prefix: 'same' | 'fresh'): Promise<IdempotencyStore>;
  dispose(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function makeTime(options: ConformanceOptions): TestTime {
  if (options.clock === 'injectable') {
    const clock = new ManualClock(Date.now());
    return {
      kind: 'injectable',
      clock,
      leaseMs: 30_000,
      toleranceMs: 0,
      async advance(ms) {
        clock.advance(ms);
      },
    };
  }
  return {
    kind: 'server',
    clock: systemClock,
    leaseMs: options.leaseMs ?? 250,
    toleranceMs: 50,
    advance: sleep,
  };
}

export function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

/** Creates a fresh store with a random prefix and its own time. */
export async function createHarness(options: ConformanceOptions): Promise<Harness> {
  const time = makeTime(options);
  const newPrefix = () => `idem-test:${randomHex(6)}:`;
  const prefix = newPrefix();
  const store = await options.createStore({ clock: time.clock, prefix });
  const others: IdempotencyStore[] = [];
  return {
    store,
    time,
    newKey: () => randomHex(32),
    raw: (key) => (options.rawRead ? options.rawRead(store, key) : store.get(key)),
    ...(options.capacity !== undefined ? { capacity: options.capacity } : {}),
    sharedBackend: options.sharedBackend,
    async another(which) {
      const other = await options.createStore({
        clock: time.clock,
        prefix: which === 'same' ? prefix : newPrefix(),
      });
      others.push(other);
      return other;
    },
    async dispose() {
      // The other stores first: `store` (its prefix's records) goes last.
      for (const other of others.splice(0)) await options.destroyStore?.(other);
      await options.destroyStore?.(store);
    },
  };
}

/** Runs `fn` with a fresh harness and always disposes of it. */
export async function withHarness<T>(
  options: ConformanceOptions,
  fn: (h: Harness) => Promise<T>,
): Promise<T> {
  const h = await createHarness(options);
  try {
    return await fn(h);
  } finally {
    await h.dispose();
  }
}
