// confmut: stores whose records live in a backend that several store instances share (as
// Redis or PostgreSQL is shared by the processes of an application), one bug each that only
// shows between instances, prefixes or clocks. The backend is the naive reference store.
import type { Clock, IdempotencyStore, StoreAdmin, StoreClock } from '@idem/core';
import type { ConformanceOptions } from '../src/index.js';
import { createNaiveStore } from './naive-store.js';

export type SharedBug =
  | 'none'
  /**
   * Acquire is a read then a write, made atomic by a lock held in the instance only (every
   * call of the instance takes it).
   */
  | 'instance-lock'
  /** The key prefix is not applied: stores made with different prefixes share records. */
  | 'prefix-ignored'
  /** Declares the server's clock, but hands the backend the process's clock (`Date.now`). */
  | 'process-clock';

/** The backend's own clock (a server's): never the process's `Date`, which a check may step. */
const serverClock: Clock = { now: () => Math.floor(performance.timeOrigin + performance.now()) };
const processClock: Clock = { now: () => Date.now() };

/** One mutex per store instance: calls through it run one at a time. */
function instanceLock() {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn);
    tail = run.catch(() => {});
    return run;
  };
}

/**
 * Options whose `createStore` gives a fresh instance onto one backend per test (per
 * `ctx.clock`: every store of one harness shares it), records named `prefix + key`.
 */
export function sharedBackendOptions(
  bug: SharedBug,
  kind: StoreClock = 'injectable',
  more: Partial<ConformanceOptions> = {},
): ConformanceOptions {
  const backends = new WeakMap<Clock, { store: IdempotencyStore; use(clock: Clock): void }>();
  const backendFor = (clock: Clock) => {
    let backend = backends.get(clock);
    if (!backend) {
      let current = kind === 'server' ? serverClock : clock;
      const base = current;
      const store = createNaiveStore(
        bug === 'instance-lock' ? 'check-then-set-acquire' : 'none',
        { now: () => current.now() },
        kind,
      );
      backend = { store, use: (c) => (current = c === clock ? base : c) };
      backends.set(clock, backend);
    }
    return backend;
  };
  return {
    clock: kind,
    sharedBackend: true,
    ...more,
    createStore({ clock, prefix }) {
      const backend = backendFor(clock);
      const inner = backend.store;
      const admin = inner.admin as StoreAdmin;
      const name = (key: string) => (bug === 'prefix-ignored' ? key : `${prefix}${key}`);
      const lock = instanceLock();
      // The naive store reads its clock synchronously when a call begins.
      const withClock = <T>(call: () => Promise<T>): Promise<T> => {
        if (bug === 'instance-lock') return lock(call);
        if (bug !== 'process-clock') return call();
        backend.use(processClock);
        try {
          return call();
        } finally {
          backend.use(clock);
        }
      };
      return {
        capabilities: inner.capabilities,
        acquire: (i) => withClock(() => inner.acquire({ ...i, key: name(i.key) })),
        complete: (i) => withClock(() => inner.complete({ ...i, key: name(i.key) })),
        release: (i) => withClock(() => inner.release({ ...i, key: name(i.key) })),
        extend: (i) => withClock(() => inner.extend({ ...i, key: name(i.key) })),
        get: (key) => withClock(() => inner.get(name(key))),
        admin: {
          inspect: (key) => withClock(() => admin.inspect(name(key))),
          forceRelease: (key, expected) => withClock(() => admin.forceRelease(name(key), expected)),
          delete: (key, expected) => withClock(() => admin.delete(name(key), expected)),
        },
      };
    },
  };
}
