import { queryObjects } from 'node:v8';

/**
 * Abort controllers and signals alive (count after full collections: settledCount in
 * scripts/heap-count.ts). A call that leaves its signals registered on a long-lived caller
 * signal keeps two or more a call.
 */
export function signalsAlive(): number {
  return (
    queryObjects(AbortController, { format: 'count' }) +
    queryObjects(AbortSignal, { format: 'count' })
  );
}
