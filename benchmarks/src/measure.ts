/** Bounds of one measurement: it stops at whichever comes first. */
export interface Bounds {
  /** Wall-clock time of the measurement, in ms. */
  ms: number;
  /** Most operations started. */
  maxOps: number;
}

/**
 * Runs `op(i)` on `concurrency` workers (each awaits its operation before starting the next)
 * until `bounds.ms` passed or `bounds.maxOps` operations were started; returns completed
 * operations per second. An operation that throws ends the measurement with its error.
 */
export async function throughput(
  concurrency: number,
  op: (i: number) => Promise<void>,
  bounds: Bounds,
): Promise<number> {
  let next = 0;
  let done = 0;
  const started = performance.now();
  const stopAt = started + bounds.ms;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < bounds.maxOps && performance.now() < stopAt) {
        await op(next++);
        done++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return done / seconds;
}

/** The median (the upper one of an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error('median of nothing');
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** `items` rotated left by `by`: round r starts with a different contender, so none is always first. */
export function rotate<T>(items: readonly T[], by: number): T[] {
  const n = items.length;
  const shift = ((by % n) + n) % n;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

/** How many set-up calls (completing a replay pool) run at once. */
export const PREPARE_CONCURRENCY = 16;

/** Runs `fn` on every item, at most `concurrency` at a time (untimed set-up work). */
export async function forEachConcurrently<T>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}
