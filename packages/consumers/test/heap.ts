import { queryObjects } from 'node:v8';
import { gc, settledCount } from '../../../scripts/heap-count.js';

/** The heap in use once garbage was collected (a few turns of the event loop first). */
export const heapAfterGc = async (): Promise<number> => {
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  return process.memoryUsage().heapUsed;
};

/**
 * Promises alive after full collections (v8.queryObjects; scripts/heap-count.ts): with
 * `atMost`, counted again while above it.
 */
export const promisesAlive = (atMost?: number): Promise<number> =>
  settledCount(() => queryObjects(Promise, { format: 'count' }), { atMost });
