import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Counting what stays alive, for the memory tests (the client's, consumers', the HTTP
 * adapters'). A leak keeps one object or more of some kind a call (a promise, a signal, a
 * request's state): counted with `v8.queryObjects` (or weak references) after full
 * collections, a few hundred calls show it, where the heap's bytes needed tens of thousands
 * and moved with a CI lane's load (allocation noise, JIT, GC timing).
 */

setFlagsFromString('--expose-gc');
/** A full collection (vitest runs without `--expose-gc`: the flag is set at run time). */
export const gc = runInNewContext('gc') as () => void;

/**
 * `count()` after full collections with turns of the event loop between (finalization
 * callbacks run there): 4 collections a count, each count walking the whole heap once. With
 * `atMost`, counted again while above it: at least 5 counts and for `waitMs` (what is still
 * settling, such as a bounded drain, gets there; a leak never does, and fails after them).
 * The fewest counted.
 */
export async function settledCount(
  count: () => number,
  { atMost, waitMs = 0 }: { atMost?: number; waitMs?: number } = {},
): Promise<number> {
  const until = Date.now() + waitMs;
  let least = Number.POSITIVE_INFINITY;
  for (let round = 0; ; round++) {
    for (let i = 0; i < 4; i++) {
      gc();
      await sleep(20);
    }
    least = Math.min(least, count());
    if (atMost === undefined || least <= atMost) return least;
    if (round >= 4 && Date.now() >= until) return least;
  }
}

/** How many of `refs` still reach their object (call after {@link settledCount}'s collections). */
export function stillAlive(refs: readonly WeakRef<object>[]): number {
  let alive = 0;
  for (const ref of refs) if (ref.deref() !== undefined) alive++;
  return alive;
}
