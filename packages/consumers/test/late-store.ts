import { setTimeout as sleep } from 'node:timers/promises';
import type { IdempotencyStore } from '@idem/core';

/** What {@link lateAcquires} saw. */
export interface LateAcquireLog {
  acquires: number;
  /** Acquires answered late so far. */
  lateAnswers: number;
  /** Releases the store answered (owner-checked: `ok` only for the owner's). */
  releases: Array<{ ok: boolean }>;
  /** Whether `count` late answers have been given, waited for 5 s at most. */
  answeredLate(count?: number): Promise<boolean>;
}

/**
 * A real store whose acquires picked by `late(n)` (n from 1) are applied at once but answered
 * `delayMs` later (a store, or a network, slower than the consumer's hold); those picked by
 * `refuse(n)` fail at once as an unreachable store does. Every other call goes through as it is.
 */
export function lateAcquires(
  inner: IdempotencyStore,
  delayMs: number,
  late: (n: number) => boolean,
  refuse: (n: number) => boolean = () => false,
): { store: IdempotencyStore; log: LateAcquireLog } {
  const log: LateAcquireLog = {
    acquires: 0,
    lateAnswers: 0,
    releases: [],
    answeredLate: (count = 1) => until(() => log.lateAnswers >= count, 5_000),
  };
  const store = new Proxy(inner, {
    get(target, name, receiver) {
      if (name === 'acquire')
        return async (input: Parameters<IdempotencyStore['acquire']>[0]) => {
          log.acquires += 1;
          const n = log.acquires;
          if (refuse(n))
            throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
          const answer = await target.acquire(input);
          if (late(n)) {
            await sleep(delayMs);
            log.lateAnswers += 1;
          }
          return answer;
        };
      if (name === 'release')
        return async (input: Parameters<IdempotencyStore['release']>[0]) => {
          const answer = await target.release(input);
          log.releases.push({ ok: answer.ok });
          return answer;
        };
      return Reflect.get(target, name, receiver);
    },
  }) as IdempotencyStore;
  return { store, log };
}

/** Waits (at most `ms`, polling) until `done()` holds; answers whether it did. */
export async function until(done: () => boolean, ms = 3_000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!done() && performance.now() < deadline) await sleep(20);
  return done();
}

/** What {@link writeOutage} saw, and its switch. */
export interface WriteOutage {
  store: IdempotencyStore;
  /** Set once the application closed the store's connection: every call fails then. */
  closed: boolean;
  /** Final writes refused so far. */
  refusedWrites: number;
  /** Whether a final write has landed. */
  landed: boolean;
}

/**
 * `inner` with its final writes (`complete`) failing as an unreachable store does until
 * `takesWrites()` says true, and every call failing so once `closed` is set (the application
 * closed the store's connection after the consumer's stop()).
 */
export function writeOutage(inner: IdempotencyStore, takesWrites: () => boolean): WriteOutage {
  const refused = () => Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
  const outage: WriteOutage = {
    closed: false,
    refusedWrites: 0,
    landed: false,
    store: new Proxy(inner, {
      get(target, name, receiver) {
        if (outage.closed)
          return typeof Reflect.get(target, name, receiver) === 'function'
            ? () => Promise.reject(refused())
            : Reflect.get(target, name, receiver);
        if (name !== 'complete') return Reflect.get(target, name, receiver);
        return async (input: Parameters<IdempotencyStore['complete']>[0]) => {
          if (!takesWrites()) {
            outage.refusedWrites += 1;
            throw refused();
          }
          const answer = await target.complete(input);
          outage.landed = answer.ok;
          return answer;
        };
      },
    }),
  };
  return outage;
}
